// Calls a MyCert-protected service with the keystore as it was delivered (.p12).
//
//   MYCERT_KEYSTORE_PASSWORD=... java MyCertClient.java URL KEYSTORE.p12 [SERVER_CA.pem]
//
// Java 11+ (single-file source launch). The keystore is used as is: PKCS12 is Java's
// default key store type. SERVER_CA.pem is the server's CA when it is not in Java's
// default trust store (tests use a self-signed one). docs/relying-parties.md.
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class MyCertClient {
    public static void main(String[] args) throws Exception {
        String password = System.getenv("MYCERT_KEYSTORE_PASSWORD");
        if (args.length < 2 || password == null) {
            System.err.println("usage: MYCERT_KEYSTORE_PASSWORD=... java MyCertClient.java URL KEYSTORE.p12 [SERVER_CA.pem]");
            System.exit(2);
        }
        KeyStore keyStore = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(args[1])) {
            keyStore.load(in, password.toCharArray());
        }
        KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        keys.init(keyStore, password.toCharArray());

        TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        if (args.length > 2) {
            KeyStore anchors = KeyStore.getInstance(KeyStore.getDefaultType());
            anchors.load(null, null);
            try (InputStream in = new FileInputStream(args[2])) {
                X509Certificate ca = (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
                anchors.setCertificateEntry("server-ca", ca);
            }
            trust.init(anchors);
        } else {
            trust.init((KeyStore) null);  // Java's default trust store
        }
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(keys.getKeyManagers(), trust.getTrustManagers(), null);

        HttpClient client = HttpClient.newBuilder().sslContext(tls).build();
        HttpResponse<String> response = client.send(
            HttpRequest.newBuilder(URI.create(args[0])).GET().build(),
            HttpResponse.BodyHandlers.ofString());
        System.out.println(response.statusCode());
        System.out.print(response.body());
    }
}
