// Entry point for the local mongo-java-server: H2 MVStore file backend, one port, clean stop.
// Compiled by iot_fed.services.artifacts at install time: javac -cp 'libs/*'.
// Usage: java [-Dmvstore.cacheMB=512] [-Dmvstore.durability=concern] [-Dmvstore.fsync=false]
//        -cp 'classes:libs/*' MongoServerMain <host> <port> <file>
//
// Durability (-Dmvstore.durability): H2 saves its store in the background (about once a
// second), so an acknowledged write can be lost to kill -9. With ``concern`` (default) a
// write command whose write concern asks for it (j: true or w: "majority") and the standard
// ``fsync`` command commit the MVStore before answering; ``always`` commits after every
// write; ``background`` is H2's own behaviour. -Dmvstore.fsync=true also forces the file to
// the disk (survives a power loss, not only a killed process).

import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.DatabaseResolver;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.oplog.Oplog;
import io.netty.channel.Channel;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.h2.mvstore.MVStore;

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

    /** Commands that change data or metadata (lower case). */
    private static final Set<String> WRITES = Set.of(
            "insert", "update", "delete", "findandmodify", "create", "createindexes", "drop",
            "dropindexes", "dropdatabase", "renamecollection", "collmod");

    /** Commands that change metadata: always committed (rare, and cheap to make durable). */
    private static final Set<String> DDL = Set.of(
            "create", "createindexes", "drop", "dropindexes", "dropdatabase", "renamecollection");

    /**
     * H2 backend whose databases report the real count of inserted documents, and which
     * commits the MVStore before acknowledging a write that asks for durability.
     */
    static final class Backend extends H2Backend {
        private final String durability;
        private final boolean fsync;

        Backend(MVStore store, String durability, boolean fsync) {
            super(store); // reopens the stored databases: no fields of ours are set yet
            this.durability = durability;
            this.fsync = fsync;
        }

        @Override
        protected MongoDatabase openOrCreateDatabase(String name) {
            return new Database(name, getMvStore(), getCursorRegistry());
        }

        @Override
        public Document handleCommand(
                Channel channel, String database, String command, Document query) {
            String cmd = command.toLowerCase(Locale.ROOT);
            if (cmd.equals("fsync")) { // the standard "flush everything to disk" command
                makeDurable(true);
                Document ok = new Document("numFiles", 1);
                ok.put("ok", 1.0);
                return ok;
            }
            Document result = super.handleCommand(channel, database, command, query);
            if (WRITES.contains(cmd) && wantsCommit(cmd, query)) {
                makeDurable(fsync);
            }
            return result;
        }

        private boolean wantsCommit(String cmd, Document query) {
            if (durability.equals("always") || DDL.contains(cmd)) {
                return !durability.equals("background");
            }
            if (!durability.equals("concern")) {
                return false;
            }
            return query.get("writeConcern") instanceof Document wc
                    && (Boolean.TRUE.equals(wc.get("j"))
                            || Boolean.TRUE.equals(wc.get("fsync"))
                            || "majority".equals(wc.get("w")));
        }

        /** Write all changes made so far to the file (kill -9 safe); optionally fsync it. */
        private void makeDurable(boolean force) {
            MVStore store = getMvStore();
            store.commit();
            if (force) {
                store.sync();
            }
        }
    }

    /** ``insert`` answers ``n`` = all documents even when some hit write errors; fix it. */
    static final class Database extends H2Database {
        Database(String name, MVStore store, CursorRegistry cursors) {
            super(name, store, cursors);
        }

        @Override
        public Document handleCommand(
                Channel channel, String command, Document query, DatabaseResolver resolver,
                Oplog oplog) {
            Document result = super.handleCommand(channel, command, query, resolver, oplog);
            if ("insert".equalsIgnoreCase(command)
                    && result.get("writeErrors") instanceof List<?> errors
                    && !errors.isEmpty()
                    && result.get("n") instanceof Number n) {
                int inserted = n.intValue() - errors.size();
                if (Boolean.TRUE.equals(query.get("ordered"))
                        && errors.get(0) instanceof Document first
                        && first.get("index") instanceof Number index) {
                    inserted = index.intValue(); // ordered: stops at the first error
                }
                result.put("n", Math.max(0, inserted));
            }
            return result;
        }
    }

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
        String durability = System.getProperty("mvstore.durability", "concern");
        if (!Set.of("concern", "always", "background").contains(durability)) {
            System.err.println("mvstore.durability must be concern, always or background");
            System.exit(2);
        }
        boolean fsync = Boolean.getBoolean("mvstore.fsync");
        Backend backend = new Backend(store, durability, fsync);
        backend.version(MONGO_4_4);
        MongoServer server = new MongoServer(backend);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.err.println("MongoServerMain: shutting down, closing " + args[2]);
            server.shutdownNow(); // closes clients, then the backend (commits the MVStore)
        }, "shutdown"));
        server.bind(host, port);
        System.err.println("MongoServerMain: listening on " + host + ":" + port + " store " + args[2]
                + " durability " + durability + (fsync ? "+fsync" : ""));
        Thread.currentThread().join(); // netty threads serve; wait for a signal
    }
}
