#!/bin/sh
# Web.java compiled with the machine's OpenJDK (javac --release 17) into $OUT/app/web.jar.
set -eu
mkdir -p "$OUT/classes" "$OUT/app"
javac --release 17 -nowarn -d "$OUT/classes" src/Web.java
jar --create --file "$OUT/app/web.jar" --main-class Web -C "$OUT/classes" .
