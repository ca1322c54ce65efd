// Entry point for the local mongo-java-server: H2 MVStore file backend, one port, clean stop.
// Compiled by iot_fed.services.artifacts at install time: javac -cp 'libs/*'.
// Usage: java -cp 'classes:libs/*' MongoServerMain <host> <port> <mvstore-file>

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.h2.H2Backend;

public final class MongoServerMain {
    private MongoServerMain() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: MongoServerMain <host> <port> <mvstore-file>");
            System.exit(2);
        }
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        H2Backend backend = new H2Backend(args[2]);
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
