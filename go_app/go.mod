module example.com/go_app

go 1.22
