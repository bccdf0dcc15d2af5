// go-web: a small HTTP service on Go's standard library. GET / answers who it is, GET /health "ok", and
// GET /proof?challenge=C the HMAC-SHA256 of C under its API token, read from $SECRET_FILE
// (/run/secrets/api-token by default), which proves it holds the token without showing it.
// An ordinary program: it knows nothing of enclaves. It listens on $PORT (8080 by default) and ends with status 0
// on SIGTERM, as a container's stop asks.
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

func main() {
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Printf("go-web %s\n", runtime.Version())
		return
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	secretFile := os.Getenv("SECRET_FILE")
	if secretFile == "" {
		secretFile = "/run/secrets/api-token"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/proof", func(w http.ResponseWriter, r *http.Request) {
		token, err := os.ReadFile(secretFile)
		if err != nil {
			http.Error(w, "no API token in "+secretFile, http.StatusServiceUnavailable)
			return
		}
		mac := hmac.New(sha256.New, token)
		mac.Write([]byte(r.URL.Query().Get("challenge")))
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"hmac_sha256": hex.EncodeToString(mac.Sum(nil))})
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"service": "go-web", "language": "go",
			"version": runtime.Version(), "pid": os.Getpid()})
	})
	srv := &http.Server{Addr: "0.0.0.0:" + port, Handler: mux}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		srv.Shutdown(context.Background())
	}()
	fmt.Printf("go-web: listening on port %s\n", port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "go-web: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("go-web: stopped")
}
