// cosign_check: a second implementation of cosign's key and signature formats, for tests/test_sign.py.
//
// Written against Go's own crypto and golang.org/x/crypto's scrypt and nacl/secretbox (the libraries cosign and
// sigstore's pkg/encrypted use), so gosmall's Python reading and writing of the same bytes is checked by other code.
//
//	cosign_check sign KEY PASSWORD_FILE PAYLOAD   prints the base64 DER ECDSA-SHA256 signature of PAYLOAD
//	cosign_check verify PUB PAYLOAD SIGNATURE_B64 exit 0 when it verifies, 1 when not
package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

type encrypted struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func privateKey(path, passwordFile string) *ecdsa.PrivateKey {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || (block.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" && block.Type != "ENCRYPTED COSIGN PRIVATE KEY") {
		fail("%s: not a cosign private key", path)
	}
	var doc encrypted
	if err := json.Unmarshal(block.Bytes, &doc); err != nil {
		fail("%s: %v", path, err)
	}
	if doc.KDF.Name != "scrypt" || doc.Cipher.Name != "nacl/secretbox" || len(doc.Cipher.Nonce) != 24 {
		fail("%s: kdf %q, cipher %q", path, doc.KDF.Name, doc.Cipher.Name)
	}
	password, err := os.ReadFile(passwordFile)
	if err != nil {
		fail("%v", err)
	}
	key, err := scrypt.Key([]byte(strings.TrimRight(string(password), "\n")), doc.KDF.Salt, doc.KDF.Params.N, doc.KDF.Params.R, doc.KDF.Params.P, 32)
	if err != nil {
		fail("%v", err)
	}
	var boxKey [32]byte
	var nonce [24]byte
	copy(boxKey[:], key)
	copy(nonce[:], doc.Cipher.Nonce)
	der, ok := secretbox.Open(nil, doc.Ciphertext, &nonce, &boxKey)
	if !ok {
		fail("%s: the password does not open it", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		fail("%s: %v", path, err)
	}
	ecKey, isEC := parsed.(*ecdsa.PrivateKey)
	if !isEC {
		fail("%s: not an ECDSA key", path)
	}
	return ecKey
}

func publicKey(path string) *ecdsa.PublicKey {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		fail("%s: not a PEM public key", path)
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		fail("%s: %v", path, err)
	}
	ecKey, isEC := parsed.(*ecdsa.PublicKey)
	if !isEC {
		fail("%s: not an ECDSA key", path)
	}
	return ecKey
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: cosign_check sign KEY PASSWORD_FILE PAYLOAD | verify PUB PAYLOAD SIGNATURE_B64")
	}
	switch os.Args[1] {
	case "sign":
		key := privateKey(os.Args[2], os.Args[3])
		payload, err := os.ReadFile(os.Args[4])
		if err != nil {
			fail("%v", err)
		}
		hash := sha256.Sum256(payload)
		signature, err := ecdsa.SignASN1(rand.Reader, key, hash[:])
		if err != nil {
			fail("%v", err)
		}
		fmt.Println(base64.StdEncoding.EncodeToString(signature))
	case "verify":
		key := publicKey(os.Args[2])
		payload, err := os.ReadFile(os.Args[3])
		if err != nil {
			fail("%v", err)
		}
		signature, err := base64.StdEncoding.DecodeString(os.Args[4])
		if err != nil {
			fail("signature: %v", err)
		}
		hash := sha256.Sum256(payload)
		if !ecdsa.VerifyASN1(key, hash[:], signature) {
			fmt.Fprintln(os.Stderr, "the signature does not verify")
			os.Exit(1)
		}
	default:
		fail("unknown command %q", os.Args[1])
	}
}
