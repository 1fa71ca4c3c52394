// go_app is gosmall's sample: an HTTP server that needs exactly two things
// from its image beyond the binary, time-zone data and nothing else.
//
//	go_app [-addr :8080]        serve
//	go_app healthcheck [-addr]  GET /healthz, exit 0 when it answers 200
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "healthcheck" {
		os.Exit(healthcheck(args[1:]))
	}
	fs := flag.NewFlagSet("go_app", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "address to listen on")
	fs.Parse(args)

	log.Printf("go_app %s listening on %s", version, *addr)
	if err := http.ListenAndServe(*addr, newMux()); err != nil {
		log.Fatal(err)
	}
}

func newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", handleTime)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": version})
	})
	return mux
}

func handleTime(w http.ResponseWriter, r *http.Request) {
	name := os.Getenv("TZ_NAME")
	if name == "" {
		name = "Europe/Berlin"
	}
	// Fails on an image without time-zone data: the bug this sample exists to catch.
	loc, err := time.LoadLocation(name)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{
			"error": fmt.Sprintf("cannot load time zone %q: %v", name, err),
			"zone":  name,
		})
		return
	}
	now := time.Now().In(loc)
	abbreviation, offset := now.Zone()
	writeJSON(w, http.StatusOK, map[string]any{
		"time":           now.Format(time.RFC3339),
		"zone":           name,
		"abbreviation":   abbreviation,
		"offset_seconds": offset,
		"utc_offset":     now.Format("-07:00"),
		"uid":            os.Getuid(),
		"version":        version,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// healthcheck lets a shell-less image carry a Docker HEALTHCHECK.
func healthcheck(args []string) int {
	fs := flag.NewFlagSet("healthcheck", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "address the server listens on")
	fs.Parse(args)

	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: status", resp.Status)
		return 1
	}
	return 0
}
