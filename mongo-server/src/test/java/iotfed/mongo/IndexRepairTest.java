// A store whose index lost a key (or kept a key without its document), as kill -9 could
// leave it before the commit gate, is repaired when it opens: the index is rebuilt from the
// documents, so an acknowledged key is refused again and a lost one accepted.
package iotfed.mongo;

import static org.junit.jupiter.api.Assertions.assertEquals;

import de.bwaldvogel.mongo.backend.KeyValue;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.bson.ObjectId;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class IndexRepairTest {
    private static final int DOCS = 100;
    private static final String KEY_INDEX = "db.r._index_moteid_1_epoch_1";

    private static Document run(MongoServerMain.Backend backend, String command, Document query) {
        return backend.handleCommand(new EmbeddedChannel(), "db", command, query);
    }

    private static Document insert(int moteid, int epoch) {
        Document doc = new Document("moteid", moteid).append("epoch", epoch);
        return new Document("insert", "r").append("documents", List.of(doc))
                .append("writeConcern", new Document("j", true));
    }

    private static MongoServerMain.Backend open(Path file) {
        return new MongoServerMain.Backend(MongoServerMain.openStore(file.toString(), 16), "concern", false);
    }

    /** A store of DOCS readings with the unique index, then ``damage`` done to its key map. */
    private static void damagedStore(Path file, Consumer<MVMap<KeyValue, Object>> damage) {
        MongoServerMain.Backend backend = open(file);
        Document index = new Document("key", new Document("moteid", 1).append("epoch", 1))
                .append("name", "moteid_1_epoch_1").append("unique", true);
        run(backend, "createIndexes", new Document("createIndexes", "r").append("indexes", List.of(index)));
        List<Document> docs = new ArrayList<>();
        for (int i = 0; i < DOCS; i++) {
            docs.add(new Document("moteid", i % 10).append("epoch", i));
        }
        run(backend, "insert", new Document("insert", "r").append("documents", docs));
        backend.close();
        MVStore store = MongoServerMain.openStore(file.toString(), 16);
        damage.accept(MongoServerMain.openIndexMap(store, KEY_INDEX));
        store.close();
    }

    private static void assertIndexHoldsTheDocuments(MongoServerMain.Backend backend) {
        Document stats = run(backend, "validate", new Document("validate", "r"));
        assertEquals(DOCS, ((Number) stats.get("nrecords")).intValue());
        Document keys = (Document) stats.get("keysPerIndex");
        assertEquals(DOCS, ((Number) keys.get("moteid_1_epoch_1")).intValue(), keys.toString());
    }

    @Test
    void aDocumentWithoutItsKeyGetsItBack(@TempDir Path dir) {
        Path file = dir.resolve("data.mv");
        damagedStore(file, keys -> keys.remove(keys.firstKey())); // moteid 0, epoch 0
        MongoServerMain.Backend backend = open(file);
        try {
            assertIndexHoldsTheDocuments(backend);
            Document res = run(backend, "insert", insert(0, 0));
            assertEquals(0, ((Number) res.get("n")).intValue(), "the stored reading again: " + res);
        } finally {
            backend.close();
        }
    }

    @Test
    void aKeyWithoutItsDocumentIsDropped(@TempDir Path dir) {
        Path file = dir.resolve("data.mv");
        damagedStore(file, keys -> keys.put(new KeyValue(7.0, 1000.0), new ObjectId()));
        MongoServerMain.Backend backend = open(file);
        try {
            assertIndexHoldsTheDocuments(backend);
            Document res = run(backend, "insert", insert(7, 1000));
            assertEquals(1, ((Number) res.get("n")).intValue(), "a reading never stored: " + res);
        } finally {
            backend.close();
        }
    }
}
