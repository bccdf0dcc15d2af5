module example.invalid/go-web

go 1.21
