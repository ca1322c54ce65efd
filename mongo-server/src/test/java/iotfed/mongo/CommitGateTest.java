// The store file, copied at random moments while clients insert (what kill -9 leaves),
// always opens with the unique index and the _id index holding exactly the documents:
// every commit is a state between commands (MongoServerMain.Backend's commit gate).
package iotfed.mongo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import de.bwaldvogel.mongo.backend.KeyValue;
import de.bwaldvogel.mongo.bson.Document;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;
import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CommitGateTest {
    private static final int WRITERS = 4;
    private static final int BATCHES = 60;
    private static final int BATCH = 100;
    private static final String DATA = "databases.db.r";
    private static final String ID_INDEX = "db.r._index__id_";
    private static final String KEY_INDEX = "db.r._index_moteid_1_epoch_1";

    private static Document insert(int writer, int batch, boolean journal) {
        List<Document> docs = new ArrayList<>();
        for (int i = 0; i < BATCH; i++) {
            docs.add(new Document("moteid", writer).append("epoch", batch * BATCH + i)
                    .append("temp", 20.5));
        }
        Document cmd = new Document("insert", "r").append("documents", docs)
                .append("ordered", false);
        // j: true commits after the command; w: 1 leaves it to the background save
        return cmd.append("writeConcern", new Document("w", 1).append("j", journal));
    }

    /** Opens a copy of the store: sizes of the data and index maps, and each key's document. */
    private static long check(Path copy) {
        MVStore ro = new MVStore.Builder().fileName(copy.toString()).readOnly().open();
        try {
            if (!ro.hasMap(DATA) || !ro.hasMap(KEY_INDEX)) {
                return 0;
            }
            MVMap<Object, Document> data = MongoServerMain.openDataMap(ro, DATA);
            MVMap<KeyValue, Object> ids = MongoServerMain.openIndexMap(ro, ID_INDEX);
            MVMap<KeyValue, Object> keys = MongoServerMain.openIndexMap(ro, KEY_INDEX);
            assertEquals(data.sizeAsLong(), ids.sizeAsLong(), "_id index vs documents");
            assertEquals(data.sizeAsLong(), keys.sizeAsLong(), "unique index vs documents");
            for (Map.Entry<KeyValue, Object> e : keys.entrySet()) {
                Document doc = data.get(e.getValue());
                assertNotNull(doc, "index key " + e.getKey() + " without its document");
            }
            return data.sizeAsLong();
        } finally {
            ro.close();
        }
    }

    @Test
    void everySavedStateHasEachDocumentsIndexKeys(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("data.mv");
        MongoServerMain.Backend backend = new MongoServerMain.Backend(
                MongoServerMain.openStore(file.toString(), 16), "concern", false);
        EmbeddedChannel channel = new EmbeddedChannel();
        Document index = new Document("key", new Document("moteid", 1).append("epoch", 1))
                .append("name", "moteid_1_epoch_1").append("unique", true);
        backend.handleCommand(channel, "db", "createIndexes",
                new Document("createIndexes", "r").append("indexes", List.of(index)));
        AtomicReference<Throwable> failed = new AtomicReference<>();
        List<Thread> writers = new ArrayList<>();
        for (int w = 0; w < WRITERS; w++) {
            int writer = w;
            Thread t = new Thread(() -> {
                try {
                    for (int b = 0; b < BATCHES; b++) {
                        Document res = backend.handleCommand(new EmbeddedChannel(), "db", "insert",
                                insert(writer, b, b % 2 == 0));
                        assertEquals(BATCH, ((Number) res.get("n")).intValue(), res.toString());
                    }
                } catch (Throwable e) {
                    failed.compareAndSet(null, e);
                }
            });
            writers.add(t);
            t.start();
        }
        Random rnd = new Random(7);
        int copies = 0;
        long seen = 0;
        while (writers.stream().anyMatch(Thread::isAlive)) {
            Thread.sleep(rnd.nextInt(15));
            Path copy = dir.resolve("copy-" + copies++ + ".mv");
            Files.copy(file, copy);
            seen = Math.max(seen, check(copy));
            Files.delete(copy);
        }
        for (Thread t : writers) {
            t.join();
        }
        if (failed.get() != null) {
            throw new AssertionError("a writer failed", failed.get());
        }
        backend.close(); // commits between commands too
        assertEquals((long) WRITERS * BATCHES * BATCH, check(file));
        assertTrue(copies >= 5 && seen > 0, copies + " copies, at most " + seen + " documents");
    }
}
