#!/bin/sh
# A static binary (no C library: CGO_ENABLED=0) into $OUT/app, with the machine's Go; no module is downloaded.
set -eu
mkdir -p "$OUT/app"
CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOCACHE="${GOCACHE:-$OUT/../gocache}" \
	go build -trimpath -ldflags=-s -o "$OUT/app/go-web" .
