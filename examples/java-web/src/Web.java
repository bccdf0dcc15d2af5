// java-web: a small HTTP service on the JDK's own com.sun.net.httpserver. GET / answers who it is, GET /health "ok".
// An ordinary program: it knows nothing of enclaves. It listens on $PORT (8080 by default) and ends with status 0
// on SIGTERM, as a container's stop asks.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

public final class Web {
    private static void answer(HttpExchange ex, int status, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(status, b.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(b);
        }
    }

    public static void main(String[] args) throws Exception {
        String port = System.getenv().getOrDefault("PORT", "8080");
        HttpServer server = HttpServer.create(new InetSocketAddress("0.0.0.0", Integer.parseInt(port)), 64);
        server.createContext("/health", ex -> answer(ex, 200, "ok\n"));
        server.createContext("/", ex -> {
            if (!ex.getRequestURI().getPath().equals("/")) {
                answer(ex, 404, "{\"error\": \"not found\"}\n");
                return;
            }
            answer(ex, 200, "{\"service\": \"java-web\", \"language\": \"java\", \"version\": \""
                    + Runtime.version() + "\", \"pid\": " + ProcessHandle.current().pid() + "}\n");
        });
        server.setExecutor(Executors.newFixedThreadPool(4));
        // SIGTERM: stop serving and end with status 0 (the JVM's own status for SIGTERM is 143)
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop(0);
            System.out.println("java-web: stopped");
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }));
        server.start();
        System.out.println("java-web: listening on port " + port);
    }
}
