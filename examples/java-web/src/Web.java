// java-web: a small HTTP service on the JDK's own com.sun.net.httpserver. GET / answers who it is, GET /health "ok",
// and GET /proof?challenge=C the HMAC-SHA256 of C under its API token, read from $SECRET_FILE
// (/run/secrets/api-token by default), which proves it holds the token without showing it.
// An ordinary program: it knows nothing of enclaves. It listens on $PORT (8080 by default) and ends with status 0
// on SIGTERM, as a container's stop asks.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
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
        String secretFile = System.getenv().getOrDefault("SECRET_FILE", "/run/secrets/api-token");
        server.createContext("/health", ex -> answer(ex, 200, "ok\n"));
        server.createContext("/proof", ex -> {
            byte[] token;
            try {
                token = Files.readAllBytes(Path.of(secretFile));
            } catch (IOException e) {
                answer(ex, 503, "{\"error\": \"no API token in " + secretFile + "\"}\n");
                return;
            }
            String challenge = "";
            String query = ex.getRequestURI().getRawQuery();
            for (String kv : query == null ? new String[0] : query.split("&")) {
                if (kv.startsWith("challenge=")) {
                    challenge = URLDecoder.decode(kv.substring(10), StandardCharsets.UTF_8);
                }
            }
            try {
                Mac mac = Mac.getInstance("HmacSHA256");
                mac.init(new SecretKeySpec(token, "HmacSHA256"));
                String hex = HexFormat.of().formatHex(mac.doFinal(challenge.getBytes(StandardCharsets.UTF_8)));
                answer(ex, 200, "{\"hmac_sha256\": \"" + hex + "\"}\n");
            } catch (java.security.GeneralSecurityException e) {
                answer(ex, 500, "{\"error\": \"" + e + "\"}\n");
            }
        });
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
