// Entry point for the local mongo-java-server: H2 MVStore file backend, one port, clean stop.
// Compiled by iot_fed.services.artifacts at install time: javac -cp 'libs/*'.
// Usage: java [-Dmvstore.cacheMB=512] -cp 'classes:libs/*' MongoServerMain <host> <port> <mvstore-file>

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import org.h2.mvstore.MVStore;
import java.util.List;

public final class MongoServerMain {
    /** The built-in versions stop at wire version 8; PyMongo 4.x needs at least 9 (4.4). */
    private static final MongoVersion MONGO_4_4 = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(4, 4, 0);
        }

        @Override
        public int getWireVersion() {
            return 9;
        }
    };

    private MongoServerMain() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: MongoServerMain <host> <port> <mvstore-file>");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        // H2's default 16 MB page cache makes every query re-read and deserialize the
        // whole collection from disk once it outgrows the cache; a larger one keeps scans fast.
        int cacheMB = Integer.getInteger("mvstore.cacheMB", 512);
        MVStore store = new MVStore.Builder().fileName(args[2]).cacheSize(cacheMB).open();
        H2Backend backend = new H2Backend(store);
        backend.version(MONGO_4_4);
        MongoServer server = new MongoServer(backend);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.err.println("MongoServerMain: shutting down, closing " + args[2]);
            server.shutdownNow(); // closes clients, then the backend (commits the MVStore)
        }, "shutdown"));
        server.bind(host, port);
        System.err.println("MongoServerMain: listening on " + host + ":" + port + " store " + args[2]);
        Thread.currentThread().join(); // netty threads serve; wait for a signal
    }
}
