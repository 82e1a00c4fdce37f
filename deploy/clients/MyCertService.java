// A Java service that accepts MyCert certificates (mutual TLS): PKIX path validation with
// revocation checking of the whole path, OCSP first and the CRL file as fallback.
//
//   java MyCertService.java PORT SERVER_CERT.pem SERVER_KEY.pem MYCERT_CA.pem MYCERT_CRLS.pem \
//       [OCSP_URL] [--soft-fail | --hard-fail]
//
// Java 17 (single-file source launch; the JDK's com.sun.net.httpserver). MYCERT_CA.pem is
// MyCert's root then issuing CA; MYCERT_CRLS.pem their CRLs, kept fresh by
// deploy/mycert-crl-refresh.sh (read again when the file changes). OCSP_URL is MyCert's
// responder for every certificate of the path, http://mycert.esante.lu/pki/ocsp/ (default:
// each certificate's AIA, which the issuing CA's lacks). SERVER_KEY.pem is PKCS#8 (BEGIN
// PRIVATE KEY). docs/relying-parties.md; tests/integration/test_relying_parties.py runs it.
//
// What the checker does (java.security.cert.PKIXRevocationChecker, no option set):
//  - every certificate of the path (not ONLY_END_ENTITY): the professional's and the issuing
//    CA's, whose answer the root signs;
//  - OCSP first; if no answer can be had (responder down, tryLater), the CRL of the file
//    (no NO_FALLBACK): a revoked certificate listed there is still refused;
//  - hard fail (no SOFT_FAIL) when neither gives a status; --soft-fail accepts then.
//  - --hard-fail (NO_FALLBACK): OCSP only, no CRL fallback. While MyCert answers tryLater
//    (a revocation committed, its answer being signed: normally under a second) the
//    fallback decides on the installed CRL, which does not list it yet; --hard-fail
//    refuses instead. The agency recommends it for prescriptions.
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsExchange;
import com.sun.net.httpserver.HttpsParameters;
import com.sun.net.httpserver.HttpsServer;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.CRL;
import java.security.cert.CertPathBuilder;
import java.security.cert.CertStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.CollectionCertStoreParameters;
import java.security.cert.PKIXBuilderParameters;
import java.security.cert.PKIXRevocationChecker;
import java.security.cert.TrustAnchor;
import java.security.cert.X509CertSelector;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.net.ssl.CertPathTrustManagerParameters;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedTrustManager;
import javax.security.auth.x500.X500Principal;

public class MyCertService {
    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: java MyCertService.java PORT SERVER_CERT SERVER_KEY MYCERT_CA MYCERT_CRLS [OCSP_URL] [--soft-fail | --hard-fail]");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        URI ocsp = args.length > 5 && !args[5].startsWith("--") ? URI.create(args[5]) : null;
        boolean softFail = List.of(args).contains("--soft-fail");
        boolean noFallback = List.of(args).contains("--hard-fail");
        // A responder that does not answer: fall back to the CRL after 5 s (default 15).
        System.setProperty("com.sun.security.ocsp.timeout", "5");
        // A resumed TLS session is not checked again: no stateless tickets, and session
        // ids resumable for a minute at most (below).
        System.setProperty("jdk.tls.server.enableSessionTicketExtension", "false");

        SSLContext tls = SSLContext.getInstance("TLS");
        ReloadingTrustManager trust = new ReloadingTrustManager(Path.of(args[3]), Path.of(args[4]), ocsp, softFail, noFallback);
        tls.init(serverKeys(Path.of(args[1]), Path.of(args[2])), new TrustManager[] {trust}, null);
        tls.getServerSessionContext().setSessionTimeout(60);

        HttpsServer server = HttpsServer.create(new InetSocketAddress("127.0.0.1", port), 64);
        server.setHttpsConfigurator(new HttpsConfigurator(tls) {
            @Override
            public void configure(HttpsParameters parameters) {
                SSLParameters ssl = tls.getDefaultSSLParameters();
                ssl.setNeedClientAuth(true);
                ssl.setProtocols(new String[] {"TLSv1.3", "TLSv1.2"});
                parameters.setSSLParameters(ssl);
            }
        });
        server.createContext("/", exchange -> {
            X509Certificate peer = (X509Certificate) ((HttpsExchange) exchange).getSSLSession().getPeerCertificates()[0];
            byte[] body = ("MyCert professional " + professionalId(peer) + "\n").getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
            exchange.close();
        });
        server.start();
        System.err.println("listening on 127.0.0.1:" + port);
    }

    /** The professional identifier: the subject's serialNumber (OID 2.5.4.5). */
    static String professionalId(X509Certificate certificate) {
        String dn = certificate.getSubjectX500Principal().getName(X500Principal.RFC2253, Map.of("2.5.4.5", "SERIALNUMBER"));
        Matcher m = Pattern.compile("(?:^|,)SERIALNUMBER=([^,]+)").matcher(dn);
        return m.find() ? m.group(1) : "";
    }

    static javax.net.ssl.KeyManager[] serverKeys(Path certFile, Path keyFile) throws Exception {
        CertificateFactory x509 = CertificateFactory.getInstance("X.509");
        Certificate[] chain;
        try (InputStream in = Files.newInputStream(certFile)) {
            chain = x509.generateCertificates(in).toArray(new Certificate[0]);
        }
        String pem = Files.readString(keyFile).replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(Base64.getDecoder().decode(pem));
        String algorithm = chain[0].getPublicKey().getAlgorithm();
        PrivateKey key = KeyFactory.getInstance(algorithm).generatePrivate(spec);
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        char[] none = new char[0];
        store.setKeyEntry("server", key, none, chain);
        KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        keys.init(store, none);
        return keys.getKeyManagers();
    }

    /** PKIX with OCSP and CRL fallback; reads the CRL file again when it changes. */
    static final class ReloadingTrustManager extends X509ExtendedTrustManager {
        private final Path caFile;
        private final Path crlFile;
        private final URI ocsp;
        private final boolean softFail;
        private final boolean noFallback;
        private volatile long loadedStamp = -1;
        private volatile X509ExtendedTrustManager current;

        ReloadingTrustManager(Path caFile, Path crlFile, URI ocsp, boolean softFail, boolean noFallback) throws Exception {
            this.caFile = caFile;
            this.crlFile = crlFile;
            this.ocsp = ocsp;
            this.softFail = softFail;
            this.noFallback = noFallback;
            current();
        }

        private synchronized X509ExtendedTrustManager current() throws CertificateException {
            try {
                long stamp = Files.getLastModifiedTime(crlFile).toMillis() ^ Files.getLastModifiedTime(caFile).toMillis();
                if (current == null || stamp != loadedStamp) {
                    current = build();
                    loadedStamp = stamp;
                }
                return current;
            } catch (CertificateException e) {
                throw e;
            } catch (Exception e) {
                throw new CertificateException("cannot read the MyCert CA or CRL file: " + e, e);
            }
        }

        private X509ExtendedTrustManager build() throws Exception {
            CertificateFactory x509 = CertificateFactory.getInstance("X.509");
            Collection<? extends Certificate> authorities;
            try (InputStream in = Files.newInputStream(caFile)) {
                authorities = x509.generateCertificates(in);
            }
            Collection<? extends CRL> crls;
            try (InputStream in = Files.newInputStream(crlFile)) {
                crls = x509.generateCRLs(in);
            }
            // The root is the only trust anchor; the issuing CA and the CRLs are material.
            Set<TrustAnchor> anchors = new java.util.HashSet<>();
            List<Object> material = new ArrayList<>(crls);
            for (Certificate c : authorities) {
                X509Certificate ca = (X509Certificate) c;
                if (ca.getSubjectX500Principal().equals(ca.getIssuerX500Principal())) {
                    anchors.add(new TrustAnchor(ca, null));
                } else {
                    material.add(ca);
                }
            }
            PKIXBuilderParameters parameters = new PKIXBuilderParameters(anchors, new X509CertSelector());
            parameters.addCertStore(CertStore.getInstance("Collection", new CollectionCertStoreParameters(material)));
            parameters.setMaxPathLength(1);  // leaf -> issuing CA -> root
            PKIXRevocationChecker revocation = (PKIXRevocationChecker) CertPathBuilder.getInstance("PKIX").getRevocationChecker();
            if (ocsp != null) {
                revocation.setOcspResponder(ocsp);
            }
            EnumSet<PKIXRevocationChecker.Option> options = EnumSet.noneOf(PKIXRevocationChecker.Option.class);
            if (softFail) {
                options.add(PKIXRevocationChecker.Option.SOFT_FAIL);
            }
            if (noFallback) {
                options.add(PKIXRevocationChecker.Option.NO_FALLBACK);
            }
            revocation.setOptions(options);
            parameters.addCertPathChecker(revocation);
            parameters.setRevocationEnabled(true);
            TrustManagerFactory factory = TrustManagerFactory.getInstance("PKIX");
            factory.init(new CertPathTrustManagerParameters(parameters));
            return (X509ExtendedTrustManager) factory.getTrustManagers()[0];
        }

        private void refused(CertificateException e, X509Certificate[] chain) throws CertificateException {
            String who = chain.length > 0 ? chain[0].getSerialNumber().toString(16) : "?";
            Throwable cause = e;
            while (cause.getCause() != null) {
                cause = cause.getCause();
            }
            System.err.println("refused " + who + ": " + cause.getMessage());
            throw e;
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket) throws CertificateException {
            try {
                current().checkClientTrusted(chain, authType, socket);
            } catch (CertificateException e) {
                refused(e, chain);
            }
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws CertificateException {
            try {
                current().checkClientTrusted(chain, authType, engine);
            } catch (CertificateException e) {
                refused(e, chain);
            }
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            try {
                current().checkClientTrusted(chain, authType);
            } catch (CertificateException e) {
                refused(e, chain);
            }
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket) throws CertificateException {
            throw new CertificateException("a server trust manager only");
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws CertificateException {
            throw new CertificateException("a server trust manager only");
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            throw new CertificateException("a server trust manager only");
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            try {
                return current().getAcceptedIssuers();
            } catch (CertificateException e) {
                return new X509Certificate[0];
            }
        }
    }
}
