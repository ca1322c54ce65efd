package iotfed.mongo;

// Entry point for the local mongo-java-server: H2 MVStore file backend, one port, clean stop.
// Built by iot_fed.services.artifacts at install time (mvn package: one jar with its deps).
// Usage: java [-Dmvstore.cacheMB=512] [-Dmvstore.durability=concern] [-Dmvstore.fsync=false]
//        -cp mongo-server.jar iotfed.mongo.MongoServerMain <host> <port> <file>
//
// Durability (-Dmvstore.durability): H2 saves its store in the background (about once a
// second), so an acknowledged write can be lost to kill -9. With ``concern`` (default) a
// write command whose write concern asks for it (j: true or w: "majority") and the standard
// ``fsync`` command commit the MVStore before answering; ``always`` commits after every
// write; ``background`` is H2's own behaviour. -Dmvstore.fsync=true also forces the file to
// the disk (survives a power loss, not only a killed process).

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.AbstractUniqueIndex;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.DatabaseResolver;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.KeyValue;
import de.bwaldvogel.mongo.backend.Missing;
import de.bwaldvogel.mongo.backend.QueryParameters;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.backend.ValueComparator;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.h2.H2Collection;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.bson.Bson;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.bson.ObjectId;
import de.bwaldvogel.mongo.exception.DuplicateKeyError;
import de.bwaldvogel.mongo.oplog.Oplog;
import de.bwaldvogel.mongo.wire.BsonConstants;
import de.bwaldvogel.mongo.wire.bson.BsonDecoder;
import de.bwaldvogel.mongo.wire.bson.BsonEncoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;
import org.h2.mvstore.Cursor;
import org.h2.mvstore.DataUtils;
import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;
import org.h2.mvstore.WriteBuffer;
import org.h2.mvstore.type.ObjectDataType;

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
     * Commands that never change the store (lower case): they run outside the commit gate,
     * so a long scan never holds up a commit (and the j: true acknowledgements waiting for
     * it). Any other command, known or not, is treated as a write. ``aggregate`` is a read
     * unless its pipeline has an $out or $merge stage.
     */
    private static final Set<String> READS = Set.of(
            "find", "getmore", "count", "distinct", "aggregate", "killcursors", "listcollections",
            "listindexes", "listdatabases", "collstats", "dbstats", "datasize", "validate", "ping",
            "hello", "ismaster", "buildinfo", "serverstatus", "getlasterror", "endsessions",
            "connectionstatus", "whatsmyuri", "getparameter", "getlog", "hostinfo",
            "getcmdlineopts", "getfreemonitoringstatus", "currentop", "iotfedindexstats");

    /**
     * H2 backend whose databases report the real count of inserted documents, and which
     * commits the MVStore before acknowledging a write that asks for durability.
     *
     * Every commit of the store is a state between commands (the commit gate): a write
     * command holds the gate's read lock (shared: writes to any collections run
     * concurrently, as before), a commit its write lock. An insert puts the document into
     * the collection's map, then its keys into each index map, so a commit in between
     * (H2's own background commit, once a second, or another client's j: true commit)
     * saved the document without its unique-index key; after kill -9 the client's retry of
     * that unacknowledged insert was accepted: a second document with the same
     * (moteid, epoch). Hence H2's auto-commit is off (the store is opened with
     * autoCommitDisabled and a zero autoCommitBufferSize) and the background save and
     * compaction are done here, through the gate.
     */
    static final class Backend extends H2Backend {
        private static final long BACKGROUND_COMMIT_MS = 1000; // as H2's autoCommitDelay
        private static final long COMPACT_EVERY_MS = 30_000;
        private static final int COMPACT_FILL_RATE = 90; // H2's autoCompactFillRate
        private static final int COMPACT_WRITE_BYTES = 16 << 20;
        private final String durability;
        private final boolean fsync;
        private final ReentrantReadWriteLock gate = new ReentrantReadWriteLock();
        private final ScheduledExecutorService saver;

        Backend(MVStore store, String durability, boolean fsync) {
            super(store); // reopens the stored databases: no fields of ours are set yet
            this.durability = durability;
            this.fsync = fsync;
            this.saver = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "mvstore-saver");
                t.setDaemon(true);
                return t;
            });
            saver.scheduleWithFixedDelay(() -> commitGated(false), BACKGROUND_COMMIT_MS,
                    BACKGROUND_COMMIT_MS, TimeUnit.MILLISECONDS);
            saver.scheduleWithFixedDelay(this::compactGated, COMPACT_EVERY_MS, COMPACT_EVERY_MS,
                    TimeUnit.MILLISECONDS);
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
                commitGated(true);
                Document ok = new Document("numFiles", 1);
                ok.put("ok", 1.0);
                return ok;
            }
            if (cmd.equals("collmod")) { // no server-side validators: say so, without the
                // library's ERROR log and stack trace (every process's init_database asks)
                Document err = new Document("ok", 0.0);
                err.put("errmsg", "collMod is not supported: no server-side validators");
                err.put("code", 59);
                err.put("codeName", "CommandNotFound");
                return err;
            }
            // (legacy OP_QUERY commands on $cmd come here too; its plain queries only read)
            Document result;
            if (isRead(cmd, query)) {
                result = super.handleCommand(channel, database, command, query);
            } else {
                gate.readLock().lock();
                try {
                    result = super.handleCommand(channel, database, command, query);
                } finally {
                    gate.readLock().unlock();
                }
            }
            if (WRITES.contains(cmd) && wantsCommit(cmd, query)) {
                commitGated(fsync); // after the command: a commit waits for no lock of ours
            }
            return result;
        }

        private static boolean isRead(String cmd, Document query) {
            if (!READS.contains(cmd)) {
                return false;
            }
            if (cmd.equals("aggregate") && query.get("pipeline") instanceof List<?> stages) {
                for (Object stage : stages) {
                    if (stage instanceof Document d
                            && (d.containsKey("$out") || d.containsKey("$merge"))) {
                        return false;
                    }
                }
            }
            return true;
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

        /**
         * Write all changes made so far to the file (kill -9 safe), between commands;
         * optionally fsync it. Clients waiting here together share one commit: whoever
         * comes after it finds nothing unsaved.
         */
        void commitGated(boolean force) {
            MVStore store = getMvStore();
            gate.writeLock().lock();
            try {
                if (store.isClosed()) {
                    return;
                }
                if (store.hasUnsavedChanges()) {
                    store.commit();
                }
                if (force) {
                    store.sync();
                }
            } catch (RuntimeException e) { // the saver thread must survive a failed save
                if (force || !Thread.currentThread().getName().equals("mvstore-saver")) {
                    throw e;
                }
                System.err.println("MongoServerMain: background commit failed: " + e);
            } finally {
                gate.writeLock().unlock();
            }
        }

        /** H2's background compaction (rewrite sparse chunks), between commands. */
        private void compactGated() {
            MVStore store = getMvStore();
            gate.writeLock().lock();
            try {
                if (!store.isClosed() && store.getFillRate() < COMPACT_FILL_RATE) {
                    store.compact(COMPACT_FILL_RATE, COMPACT_WRITE_BYTES);
                    if (store.hasUnsavedChanges()) {
                        store.commit();
                    }
                }
            } catch (RuntimeException e) {
                System.err.println("MongoServerMain: background compaction failed: " + e);
            } finally {
                gate.writeLock().unlock();
            }
        }

        /** Clients are closed first (MongoServer.shutdownNow); the store closes between
         *  commands, so its final commit is a consistent one too. */
        @Override
        public void close() {
            // not shutdownNow: interrupting a save closes H2's FileChannel
            // (ClosedByInterruptException) and the final commit below then fails: data lost
            saver.shutdown();
            try {
                if (!saver.awaitTermination(60, TimeUnit.SECONDS)) {
                    System.err.println("MongoServerMain: a background save still runs at close");
                }
            } catch (InterruptedException e) {
                // not re-raised: an interrupted thread could not write the final commit
                System.err.println("MongoServerMain: interrupted waiting for the saver");
            }
            gate.writeLock().lock();
            try {
                store.commit(); // what was acknowledged without j is saved on a clean stop too
                super.close();
            } finally {
                gate.writeLock().unlock();
            }
        }
    }

    /**
     * BSON documents as mongo-java-server's BsonEncoder writes them (same bytes), walking
     * the entries once (BsonEncoder looks every key up again), and their encoded size
     * without encoding (what AbstractMongoCollection tracks as a collection's data size).
     */
    static final class BsonCodec {
        private BsonCodec() {}

        static void writeDocument(Map<String, ?> doc, ByteBuf out) {
            int start = out.writerIndex();
            out.writeIntLE(0); // total length, set below
            for (Map.Entry<String, ?> e : doc.entrySet()) {
                Object v = e.getValue();
                byte type = BsonEncoder.determineType(v);
                out.writeByte(type);
                writeKey(e.getKey(), out);
                if (type == BsonConstants.TYPE_EMBEDDED_DOCUMENT) {
                    @SuppressWarnings("unchecked")
                    Map<String, ?> sub = (Map<String, ?>) v;
                    writeDocument(sub, out);
                } else {
                    BsonEncoder.encodeValue(type, v, out);
                }
            }
            out.writeByte(0);
            out.setIntLE(start, out.writerIndex() - start);
        }

        /** A field name as a BSON cstring: ASCII byte by byte (no array), else UTF-8. */
        private static void writeKey(String key, ByteBuf out) {
            int n = key.length();
            for (int i = 0; i < n; i++) {
                if (key.charAt(i) >= 0x80) {
                    out.writeBytes(key.getBytes(StandardCharsets.UTF_8)).writeByte(0);
                    return;
                }
            }
            out.ensureWritable(n + 1);
            for (int i = 0; i < n; i++) {
                out.writeByte(key.charAt(i));
            }
            out.writeByte(0);
        }

        static int documentSize(Map<String, ?> doc) {
            int size = 5; // length + terminator
            for (Map.Entry<String, ?> e : doc.entrySet()) {
                size += 2 + utf8Length(e.getKey()) + valueSize(e.getValue());
            }
            return size;
        }

        private static int valueSize(Object v) {
            if (v instanceof Double || v instanceof Long || v instanceof Instant) {
                return 8;
            } else if (v instanceof Integer) {
                return 4;
            } else if (v instanceof String str) {
                return 5 + utf8Length(str);
            } else if (v instanceof Map<?, ?> map) { // BsonEncoder: any Map is a document
                @SuppressWarnings("unchecked")
                Map<String, ?> sub = (Map<String, ?>) map;
                return documentSize(sub);
            } else if (v == null) {
                return 0;
            } else if (v instanceof Boolean) {
                return 1;
            } else if (v instanceof ObjectId) {
                return 12;
            }
            ByteBuf buf = Unpooled.buffer(); // anything else: as BsonEncoder writes it
            try {
                BsonEncoder.encodeValue(BsonEncoder.determineType(v), v, buf);
                return buf.writerIndex();
            } finally {
                buf.release();
            }
        }

        /** Bytes of String.getBytes(UTF_8): a lone surrogate becomes '?'. */
        static int utf8Length(String s) {
            int n = s.length();
            int bytes = n;
            for (int i = 0; i < n; i++) {
                char c = s.charAt(i);
                if (c < 0x80) {
                    continue;
                } else if (c < 0x800) {
                    bytes += 1;
                } else if (Character.isHighSurrogate(c) && i + 1 < n
                        && Character.isLowSurrogate(s.charAt(i + 1))) {
                    bytes += 2; // 4 bytes for the pair
                    i++;
                } else if (!Character.isSurrogate(c)) {
                    bytes += 2;
                }
            }
            return bytes;
        }
    }

    /**
     * How keys and values of the collection and index maps are written to the MVStore.
     *
     * H2's ObjectDataType stores every object it does not know (Document, KeyValue,
     * ObjectId, Missing) with Java serialization: a class descriptor and an
     * ObjectOutputStream per value, most of the server's time on a durable insert. This
     * type writes those as BSON (mongo-java-server's own encoder) behind a tag byte of
     * 0x80 or above, which ObjectDataType never writes (its tags stop at 119), and leaves
     * everything else (numbers, strings, UUIDs, null, and whatever BSON cannot encode) to
     * ObjectDataType. Reading looks at the tag, so pages written before (Java-serialized)
     * and after read alike: a store needs no rewrite. Order (compare) is ObjectDataType's,
     * unchanged, so existing maps stay sorted.
     */
    static class StoreType extends ObjectDataType {
        static final byte TAG_DOCUMENT = (byte) 0xB0; // BSON document (int32 length first)
        static final byte TAG_BSON = (byte) 0xB1; // BSON type byte + BSON value
        static final byte TAG_MISSING = (byte) 0xB2;
        static final byte TAG_KEY = (byte) 0xB3; // KeyValue: var-int count + values
        private static final int SCRATCH_KEEP = 1 << 20;
        private static final ThreadLocal<ByteBuf> SCRATCH =
                ThreadLocal.withInitial(() -> Unpooled.buffer(4096));

        @Override
        public void write(WriteBuffer buff, Object obj) {
            if (obj instanceof Document doc) {
                if (!writeBson(buff, TAG_DOCUMENT, doc)) {
                    super.write(buff, obj);
                }
            } else if (obj instanceof KeyValue key) {
                buff.put(TAG_KEY).putVarInt(key.size());
                for (Object v : key) {
                    write(buff, v);
                }
            } else if (obj instanceof Missing) {
                buff.put(TAG_MISSING);
            } else if (obj == null || obj instanceof Integer || obj instanceof Long
                    || obj instanceof Double || obj instanceof String || obj instanceof Boolean
                    || obj instanceof UUID) {
                super.write(buff, obj); // ObjectDataType's compact native encodings
            } else if (!writeBson(buff, TAG_BSON, obj)) {
                super.write(buff, obj);
            }
        }

        /** Tag + BSON of ``obj`` (a document, or one value); false: BSON cannot encode it. */
        private static boolean writeBson(WriteBuffer buff, byte tag, Object obj) {
            ByteBuf scratch = SCRATCH.get().clear();
            try {
                if (tag == TAG_DOCUMENT) {
                    BsonCodec.writeDocument((Document) obj, scratch);
                } else {
                    byte type = BsonEncoder.determineType(obj);
                    scratch.writeByte(type);
                    BsonEncoder.encodeValue(type, obj, scratch);
                }
            } catch (RuntimeException unsupported) { // e.g. a Java type BSON has no type for
                return false;
            }
            buff.put(tag).put(scratch.array(), scratch.arrayOffset(), scratch.writerIndex());
            if (scratch.capacity() > SCRATCH_KEEP) { // after a huge document: don't keep it
                SCRATCH.remove();
            }
            return true;
        }

        @Override
        public Object read(ByteBuffer buff) {
            byte tag = buff.get(buff.position());
            switch (tag) {
                case TAG_DOCUMENT, TAG_BSON -> {
                    buff.get();
                    ByteBuf in = Unpooled.wrappedBuffer(buff.slice());
                    Object value = tag == TAG_DOCUMENT
                            ? BsonDecoder.decodeBson(in)
                            : BsonDecoder.decodeValue(in.readByte(), in);
                    buff.position(buff.position() + in.readerIndex());
                    return value;
                }
                case TAG_MISSING -> {
                    buff.get();
                    return Missing.getInstance();
                }
                case TAG_KEY -> {
                    buff.get();
                    int n = DataUtils.readVarInt(buff);
                    Object[] values = new Object[n];
                    for (int i = 0; i < n; i++) {
                        values[i] = read(buff);
                    }
                    return new KeyValue(values);
                }
                default -> {
                    return super.read(buff); // ObjectDataType's own (also every older page)
                }
            }
        }

        /** Heap estimate (page split and cache accounting), without encoding. */
        @Override
        public int getMemory(Object obj) {
            return obj instanceof Bson || obj instanceof KeyValue ? estimate(obj) : super.getMemory(obj);
        }

        private static int estimate(Object v) {
            if (v instanceof Document doc) {
                int m = 64;
                for (Map.Entry<String, Object> e : doc.entrySet()) {
                    m += 48 + 2 * e.getKey().length() + estimate(e.getValue());
                }
                return m;
            } else if (v instanceof KeyValue key) {
                int m = 48;
                for (Object x : key) {
                    m += 8 + estimate(x);
                }
                return m;
            } else if (v instanceof Collection<?> list) {
                int m = 40;
                for (Object x : list) {
                    m += 8 + estimate(x);
                }
                return m;
            } else if (v instanceof String str) {
                return 48 + str.length();
            } else if (v instanceof ObjectId) {
                return 48;
            }
            return 24;
        }
    }

    /**
     * Keys of index maps: KeyValues compared in MongoDB's value order (ValueComparator),
     * with shortcuts that give ValueComparator's answer without its type walk and number
     * normalisation: the unique index holds normalised keys (numbers as doubles), so most
     * comparisons are double-double; also ints/longs, strings, ObjectIds and dates.
     * Stored as StoreType.
     */
    static final class IndexKeyType extends StoreType {
        private static final ValueComparator ORDER = ValueComparator.asc();
        private static final long EXACT = 1L << 53; // longs a double holds exactly
        private static final double INT_RANGE = 1L << 31; // normalised to Integer, never Long

        @Override
        public int compare(Object a, Object b) {
            if (a instanceof KeyValue ka && b instanceof KeyValue kb) {
                int n = Math.min(ka.size(), kb.size());
                for (int i = 0; i < n; i++) {
                    int c = compareValues(ka.get(i), kb.get(i));
                    if (c != 0) {
                        return c;
                    }
                }
                return Integer.compare(ka.size(), kb.size());
            }
            return super.compare(a, b);
        }

        static int compareValues(Object a, Object b) {
            if (a instanceof Double x && b instanceof Double y) {
                double p = x;
                double q = y;
                // ValueComparator: Double.compare after normalising (-0.0 -> 0); a value it
                // normalises to Long (integral, |v| >= 2^31) is compared truncated: not here
                if (Math.abs(p) < INT_RANGE && Math.abs(q) < INT_RANGE) { // false for NaN
                    return p < q ? -1 : (p > q ? 1 : 0);
                }
            } else if (a instanceof Integer x && b instanceof Integer y) {
                return Integer.compare(x, y);
            } else if ((a instanceof Long || a instanceof Integer)
                    && (b instanceof Long || b instanceof Integer)) {
                long x = ((Number) a).longValue();
                long y = ((Number) b).longValue();
                if (x >= -EXACT && x <= EXACT && y >= -EXACT && y <= EXACT) {
                    return Long.compare(x, y);
                }
            } else if (a instanceof String x && b instanceof String y) {
                return x.compareTo(y);
            } else if (a instanceof ObjectId x && b instanceof ObjectId y) {
                return x.compareTo(y);
            } else if (a instanceof Instant x && b instanceof Instant y) {
                return x.compareTo(y);
            }
            return ORDER.compare(a, b);
        }
    }

    /**
     * H2UniqueIndex (same map, same keys) that handles the common document - top-level
     * key fields, no arrays or sub-documents as values, not sparse - without the generic
     * path: AbstractUniqueIndex builds the key values with streams and a path split three
     * times per document and index (checkAdd, then add, which checks again) and looks the
     * key up twice; here it is built once per call and ``add`` is one putIfAbsent (a
     * taken key still raises DuplicateKeyError). Anything else goes the generic way.
     */
    static final class UniqueIndex extends AbstractUniqueIndex<Object> implements ScoredIndex {
        private final MVMap<KeyValue, Object> mvMap;
        private final String[] fields; // null: some key is a path (a.b): generic only

        UniqueIndex(MVMap<KeyValue, Object> mvMap, String name, List<IndexKey> keys, boolean sparse) {
            super(name, keys, sparse);
            this.mvMap = mvMap;
            String[] f = keys.stream().map(IndexKey::getKey).toArray(String[]::new);
            this.fields = sparse || Arrays.stream(f).anyMatch(k -> k.contains(".")) ? null : f;
        }

        /** The raw key of ``document`` (as in a DuplicateKeyError), or null: generic path. */
        private KeyValue simpleKey(Document document) {
            if (fields == null) {
                return null;
            }
            Object[] values = new Object[fields.length];
            for (int i = 0; i < fields.length; i++) {
                Object v = document.getOrMissing(fields[i]);
                if (v instanceof Map || v instanceof Collection) {
                    return null;
                }
                values[i] = v;
            }
            return new KeyValue(values);
        }

        /** Utils.normalizeValue for scalars: numbers as doubles (unless a long needs 64 bits). */
        private static KeyValue normalized(KeyValue raw) {
            Object[] values = new Object[raw.size()];
            for (int i = 0; i < values.length; i++) {
                values[i] = normalizedValue(raw.get(i));
            }
            return new KeyValue(values);
        }

        static Object normalizedValue(Object v) {
            if (v instanceof Missing) {
                return null;
            }
            if (v instanceof Number n && !(v instanceof Long l && l != (long) l.doubleValue())) {
                double d = n.doubleValue(); // 64-bit longs are kept
                return d == 0.0 ? 0.0 : d; // -0.0 -> 0.0
            }
            return v;
        }

        @Override
        public synchronized boolean canHandle(Document query) {
            return super.canHandle(query) || KeyRanges.of(fields, query) != null;
        }

        @Override
        public synchronized int score(Document query) {
            return super.canHandle(query) ? Integer.MAX_VALUE : KeyRanges.score(KeyRanges.of(fields, query));
        }

        @Override
        public synchronized Iterable<Object> getPositions(Document query) {
            if (super.canHandle(query)) {
                return super.getPositions(query);
            }
            return KeyRanges.positions(mvMap, KeyRanges.of(fields, query), null);
        }

        boolean sparse() {
            return isSparse();
        }

        /** Remove every key (DataCollection.repair rebuilds it from the documents). */
        synchronized void clearKeys() {
            mvMap.clear();
        }

        // --- as H2UniqueIndex -------------------------------------------------------
        @Override
        protected Object removeDocument(KeyValue keyValue) {
            return mvMap.remove(keyValue);
        }

        @Override
        protected boolean putKeyPosition(KeyValue keyValue, Object position) {
            return mvMap.putIfAbsent(keyValue, Missing.ofNullable(position)) == null;
        }

        @Override
        protected Iterable<Map.Entry<KeyValue, Object>> getIterable() {
            return mvMap.entrySet();
        }

        @Override
        protected Object getPosition(KeyValue keyValue) {
            return mvMap.get(keyValue);
        }

        @Override
        public long getCount() {
            return mvMap.sizeAsLong();
        }

        @Override
        public boolean isEmpty() {
            return mvMap.isEmpty();
        }

        @Override
        public long getDataSize() {
            return getCount();
        }
    }

    /** An index that says how well it answers a query (0: not at all). */
    interface ScoredIndex {
        int score(Document query);
    }

    /**
     * Key-range reads of an ordered index map (UniqueIndex, SecondaryIndex). The library
     * answers from a unique index only a query on all its fields by equality (or $in on a
     * one-field index), ignores non-unique indexes, and scans the whole collection, locked,
     * for anything else: 3-5 s at 160k documents for the reporting store's per-mote time
     * ranges, while every insert into that collection waited. Here a query whose conditions
     * include equality ($eq, $in) on a prefix of the index's fields, optionally followed by
     * a range ($gt, $gte, $lt, $lte) on the next field, or an $or of such clauses, reads
     * the matching key ranges of the map. The positions are a superset of the answer (any
     * other condition, and MongoDB's type bracketing of ranges, is left to the query
     * matcher, which still checks every document), so the result is the scan's.
     */
    static final class KeyRanges {
        /** Queries whose key ranges this process read (the iotFedIndexStats command). */
        static final AtomicLong QUERIES = new AtomicLong();
        /** Candidate documents of the last such query (how tightly its index bounded it). */
        static final AtomicLong LAST_CANDIDATES = new AtomicLong();
        private static final int MAX_RANGES = 10_000;

        /** Keys starting with ``prefix``, then (``bounded``) the next field within lo..hi. */
        record Range(
                Object[] prefix, boolean bounded, Object lo, boolean loIn, Object hi, boolean hiIn) {}

        private KeyRanges() {}

        /** The key ranges that hold every answer to ``query``, or null: not by ranges. */
        static List<Range> of(String[] fields, Document query) {
            if (fields == null || query.isEmpty()) {
                return null;
            }
            if (query.size() == 1 && query.get("$or") instanceof List<?> clauses) {
                List<Range> all = new ArrayList<>();
                for (Object clause : clauses) {
                    List<Range> part = clause instanceof Document d ? clause(fields, d) : null;
                    if (part == null || all.size() + part.size() > MAX_RANGES) {
                        return null;
                    }
                    all.addAll(part);
                }
                return all.isEmpty() ? null : all;
            }
            return clause(fields, query);
        }

        private static List<Range> clause(String[] fields, Document clause) {
            List<Object[]> prefixes = new ArrayList<>();
            prefixes.add(new Object[0]);
            int k = 0;
            for (; k < fields.length && clause.containsKey(fields[k]); k++) {
                List<Object> values = equalityValues(clause.get(fields[k]));
                if (values == null) {
                    break; // a range on this field, or not for this index
                }
                List<Object[]> longer = new ArrayList<>();
                for (Object[] p : prefixes) {
                    for (Object v : values) {
                        Object[] q = Arrays.copyOf(p, p.length + 1);
                        q[p.length] = v;
                        longer.add(q);
                    }
                }
                if (longer.isEmpty() || longer.size() > MAX_RANGES) {
                    return null;
                }
                prefixes = longer;
            }
            Object[] bound = {null, false, null, false}; // lo, loIn, hi, hiIn
            boolean bounded = k < fields.length && clause.containsKey(fields[k]);
            if (bounded && !rangeBounds(clause.get(fields[k]), bound)) {
                return null;
            }
            if (k == 0 && !bounded) {
                return null; // the first field is not constrained: nothing to seek to
            }
            List<Range> ranges = new ArrayList<>(prefixes.size());
            for (Object[] p : prefixes) {
                ranges.add(new Range(p, bounded, bound[0], (Boolean) bound[1], bound[2], (Boolean) bound[3]));
            }
            return ranges;
        }

        private static boolean isScalar(Object v) {
            return v instanceof Number || v instanceof String || v instanceof Instant
                    || v instanceof ObjectId || v instanceof Boolean;
        }

        /** The normalised values an equality or $eq / $in condition accepts, or null. */
        private static List<Object> equalityValues(Object condition) {
            if (isScalar(condition)) {
                return List.of(UniqueIndex.normalizedValue(condition));
            }
            if (!(condition instanceof Document d) || d.size() != 1) {
                return null;
            }
            Object eq = d.get("$eq");
            if (isScalar(eq)) {
                return List.of(UniqueIndex.normalizedValue(eq));
            }
            if (!(d.get("$in") instanceof Collection<?> in)) {
                return null;
            }
            List<Object> values = new ArrayList<>(in.size());
            for (Object v : in) {
                if (!isScalar(v)) {
                    return null; // null, a regex, an array: MongoDB matches more than the key
                }
                values.add(UniqueIndex.normalizedValue(v));
            }
            return values;
        }

        /** Fill ``bound`` (lo, loIn, hi, hiIn) from $gt/$gte/$lt/$lte; false: not a range. */
        private static boolean rangeBounds(Object condition, Object[] bound) {
            if (!(condition instanceof Document d) || d.isEmpty()) {
                return false;
            }
            for (Map.Entry<String, Object> e : d.entrySet()) {
                if (!isScalar(e.getValue())) {
                    return false;
                }
                Object v = UniqueIndex.normalizedValue(e.getValue());
                int at = switch (e.getKey()) {
                    case "$gt", "$gte" -> 0;
                    case "$lt", "$lte" -> 2;
                    default -> -1;
                };
                if (at < 0 || bound[at] != null) {
                    return false;
                }
                bound[at] = v;
                bound[at + 1] = e.getKey().endsWith("e");
            }
            return true;
        }

        /** How many leading index fields ``ranges`` constrain (the fewest over an $or's
         *  clauses): the query planner's measure of how tightly an index bounds a query. */
        static int score(List<Range> ranges) {
            if (ranges == null) {
                return 0;
            }
            int fewest = Integer.MAX_VALUE;
            for (Range r : ranges) {
                fewest = Math.min(fewest, r.prefix().length + (r.bounded() ? 1 : 0));
            }
            return fewest;
        }

        /** The positions under ``ranges`` (plus those under ``alsoPrefix``, if given). */
        static Set<Object> positions(MVMap<KeyValue, Object> map, List<Range> ranges, Object alsoPrefix) {
            QUERIES.incrementAndGet();
            Set<Object> out = new LinkedHashSet<>();
            for (Range r : ranges) {
                add(map, r, out);
            }
            if (alsoPrefix != null) {
                add(map, new Range(new Object[] {alsoPrefix}, false, null, false, null, false), out);
            }
            LAST_CANDIDATES.set(out.size());
            return out;
        }

        private static void add(MVMap<KeyValue, Object> map, Range r, Set<Object> out) {
            int k = r.prefix().length;
            Object[] start = r.lo() == null ? r.prefix() : Arrays.copyOf(r.prefix(), k + 1);
            if (r.lo() != null) {
                start[k] = r.lo();
            }
            // a shorter key sorts before every key it is a prefix of (IndexKeyType); no
            // prefix and no lower bound: from the first key (a KeyValue cannot be empty)
            KeyValue from = start.length == 0 ? null : new KeyValue(start);
            Cursor<KeyValue, Object> cursor = map.cursor(from);
            scan:
            while (cursor.hasNext()) {
                KeyValue key = cursor.next();
                if (key.size() < k + (r.bounded() ? 1 : 0)) {
                    break;
                }
                for (int i = 0; i < k; i++) {
                    if (IndexKeyType.compareValues(key.get(i), r.prefix()[i]) != 0) {
                        break scan; // past the prefix's keys
                    }
                }
                if (r.bounded()) {
                    Object v = key.get(k);
                    if (r.hi() != null) {
                        int c = IndexKeyType.compareValues(v, r.hi());
                        if (c > 0 || (c == 0 && !r.hiIn())) {
                            break;
                        }
                    }
                    if (r.lo() != null && !r.loIn() && IndexKeyType.compareValues(v, r.lo()) == 0) {
                        continue;
                    }
                }
                out.add(cursor.getValue());
            }
        }
    }

    /**
     * A non-unique index (the library ignores them: EmptyIndex), for queries only: the
     * map's keys are the document's field values then its position (its _id), so equal
     * values stay distinct, in the same order as UniqueIndex's keys; KeyRanges reads it.
     * A document with an array or sub-document in an indexed field is kept under one
     * marker key that every query's positions include (MongoDB matches array elements;
     * the matcher decides). Built from the collection's documents when its map is empty
     * (AbstractMongoCollection.addIndex), so a store written before it gets it on open.
     */
    static final class SecondaryIndex extends Index<Object> implements ScoredIndex {
        private static final String MULTIKEY = "\u0000iot_fed:multikey";
        private final MVMap<KeyValue, Object> mvMap;
        private final String[] fields;

        SecondaryIndex(MVMap<KeyValue, Object> mvMap, String name, List<IndexKey> keys) {
            super(name, keys, false);
            this.mvMap = mvMap;
            this.fields = keys.stream().map(IndexKey::getKey).toArray(String[]::new);
        }

        private KeyValue key(Document document, Object position) {
            Object[] values = new Object[fields.length + 1];
            for (int i = 0; i < fields.length; i++) {
                Object v = document.getOrMissing(fields[i]);
                if (v instanceof Map || v instanceof Collection) {
                    return new KeyValue(MULTIKEY, position);
                }
                values[i] = UniqueIndex.normalizedValue(v);
            }
            values[fields.length] = position;
            return new KeyValue(values);
        }

        private static Object positionOf(Document document) {
            return document.get("_id");
        }

        @Override
        public Object getPosition(Document document) {
            return null; // not unique: no document is "the" one with these values
        }

        @Override
        public void checkAdd(Document document, MongoCollection<Object> collection) {}

        @Override
        public synchronized void add(Document document, Object position, MongoCollection<Object> collection) {
            mvMap.put(key(document, position), Missing.ofNullable(position));
        }

        @Override
        public synchronized Object remove(Document document) {
            Object position = positionOf(document);
            Object removed = mvMap.remove(key(document, position));
            return removed != null ? removed : Missing.ofNullable(position);
        }

        @Override
        public void checkUpdate(Document oldDocument, Document newDocument, MongoCollection<Object> collection) {}

        @Override
        public synchronized void updateInPlace(Document oldDocument, Document newDocument,
                Object position, MongoCollection<Object> collection) {
            KeyValue before = key(oldDocument, position);
            KeyValue after = key(newDocument, position);
            if (!before.equals(after)) {
                mvMap.remove(before);
                mvMap.put(after, Missing.ofNullable(position));
            }
        }

        @Override
        public synchronized boolean canHandle(Document query) {
            return KeyRanges.of(fields, query) != null;
        }

        @Override
        public synchronized int score(Document query) {
            return KeyRanges.score(KeyRanges.of(fields, query));
        }

        @Override
        public synchronized Iterable<Object> getPositions(Document query) {
            return KeyRanges.positions(mvMap, KeyRanges.of(fields, query), MULTIKEY);
        }

        @Override
        public long getCount() {
            return mvMap.sizeAsLong();
        }

        @Override
        public long getDataSize() {
            return getCount();
        }

        @Override
        public void drop() {
            mvMap.clear();
        }
    }

    private static final String INDEX_MAP = "._index_";
    private static final String SECONDARY_MAP = "._secondary_";
    private static final String DATA_MAP = "databases."; // as H2Database names its maps
    private static final String META_MAP = "meta.";
    private static final String FORMAT_MAP = "iot_fed.format";
    private static final String INDEX_ORDER = "index_key_order";

    /**
     * H2Collection whose inserts size the document with BsonCodec.documentSize instead of
     * encoding it (Utils.calculateSize) just to measure it (the same number), and add an
     * insert command's sizes to the stored data size once, not once per document (each
     * update is a copy-on-write put into the collection's meta map).
     */
    static final class DataCollection extends H2Collection {
        private boolean sizing = true; // false inside addDocument: sized there, cheaper
        private boolean batching; // inside insertDocuments: sizes add up in pendingSize
        private int pendingSize;
        private static final int MAX_NAMES = 4096;
        private static final int SCAN_SHARE = 4; // index when it selects < 1/4 of the documents
        private final Map<String, String> names = new HashMap<>(); // top-level field names

        DataCollection(MongoDatabase db, String name, CollectionOptions options,
                MVMap<Object, Document> data, MVMap<String, Object> meta, CursorRegistry cursors) {
            super(db, name, options, data, meta, cursors);
        }

        /**
         * An index opened with the collection (a store's start) whose key count disagrees
         * with the documents is rebuilt from them: before the commit gate (Backend), kill -9
         * could leave a document without its keys, or keys without their document. Only the
         * count is compared (a full check would read every document at every start).
         */
        @Override
        public synchronized void addIndex(Index<Object> index) {
            boolean opened = getIndexes().stream().noneMatch(i -> i.getName().equals(index.getName()));
            super.addIndex(index);
            boolean checked = index instanceof UniqueIndex u ? !u.sparse() : index instanceof SecondaryIndex;
            if (opened && checked && !index.isEmpty() && index.getCount() != count()) {
                repair(index);
            }
        }

        private void repair(Index<Object> index) {
            long keys = index.getCount();
            Set<KeyValue> expected = new HashSet<>();
            List<Object> clashing = new ArrayList<>();
            streamAllDocumentsWithPosition().forEach(d -> {
                for (KeyValue key : index.getKeyValues(d.getDocument())) {
                    if (!expected.add(key.normalized()) && index.isUnique()) {
                        clashing.add(d.getDocument().get("_id"));
                    }
                }
            });
            String what = "MongoServerMain: " + getFullName() + " index " + index.getName() + ": "
                    + keys + " keys for " + count() + " documents";
            if (index.isUnique() && expected.size() == keys) {
                return; // array values: a document has several keys
            }
            if (!clashing.isEmpty()) { // MongoDB would refuse to build it: left as it is
                System.err.println(what + "; not rebuilt: " + clashing.size() + " documents have"
                        + " a key another document has (delete them), _id "
                        + clashing.subList(0, Math.min(20, clashing.size())));
                return;
            }
            if (index instanceof UniqueIndex unique) {
                unique.clearKeys(); // AbstractUniqueIndex.drop leaves its keys
            } else {
                index.drop();
            }
            streamAllDocumentsWithPosition().forEach(
                    d -> index.add(d.getDocument(), d.getPosition(), this));
            System.err.println(what + "; rebuilt from the documents: " + index.getCount() + " keys");
        }

        @Override
        protected boolean tracksDataSize() {
            return sizing && super.tracksDataSize();
        }

        @Override
        protected int getDataSize() {
            return super.getDataSize() + pendingSize;
        }

        /**
         * Stores a copy whose field names are one shared String each (the wire decoder
         * makes new ones for every document): fewer live objects for the GC to copy.
         */
        @Override
        protected Object addDocumentInternal(Document document) {
            Document stored = new Document();
            for (Map.Entry<String, Object> e : document.entrySet()) {
                String name = e.getKey();
                String shared = names.get(name);
                if (shared == null) {
                    shared = name;
                    if (names.size() < MAX_NAMES) {
                        names.put(name, name);
                    }
                }
                stored.put(shared, e.getValue());
            }
            return super.addDocumentInternal(stored);
        }

        @Override
        public synchronized void addDocument(Document document) {
            boolean track = tracksDataSize();
            sizing = false;
            try {
                super.addDocument(document);
            } finally {
                sizing = true;
            }
            if (track) {
                int size = BsonCodec.documentSize(document);
                if (batching) {
                    pendingSize += size;
                } else {
                    updateDataSize(size);
                }
            }
        }

        /**
         * A find without the collection's lock (AbstractSynchronizedMongoCollection holds it
         * for the whole query): a reporting scan of a large collection took 0.6-3 s, and
         * every insert into that collection (the scorer's predictions) waited for it. Reads
         * need no lock: the documents and the indexes are MVMaps (safe for readers while
         * one writer, under the lock, changes them), SecondaryIndex locks itself, and the
         * matcher checks every document a read returns. A read sees each document as it
         * was before or after a concurrent write, like MongoDB's. The selector parsing is
         * AbstractMongoCollection.handleQuery's, which cannot be called past the
         * synchronized override in between.
         */
        @Override
        public QueryResult handleQuery(QueryParameters queryParameters) {
            Document selector = queryParameters.getQuerySelector();
            Document query = selector;
            Document orderBy = null;
            if (selector.containsKey("query")) {
                query = (Document) selector.get("query");
                orderBy = (Document) selector.get("orderby");
            } else if (selector.containsKey("$query")) {
                query = (Document) selector.get("$query");
                orderBy = (Document) selector.get("$orderby");
            }
            return queryDocuments(query, orderBy, queryParameters.getNumberToSkip(),
                    queryParameters.getLimit(), queryParameters.getBatchSize(),
                    queryParameters.getProjection());
        }

        /**
         * The index that bounds the query most tightly (ScoredIndex.score), not the first
         * that can answer it: a (moteid, epoch) unique index answers {moteid, ts range} by
         * all of a mote's keys, a (moteid, ts) index by the range's keys only.
         */
        @Override
        protected QueryResult queryDocuments(Document query, Document orderBy, int numberToSkip,
                int limit, int batchSize, Document fieldSelector) {
            List<Index<Object>> indexes;
            synchronized (this) { // the list changes only with createIndex / dropIndex
                indexes = new ArrayList<>(getIndexes());
            }
            Index<Object> best = null;
            int bestScore = 0;
            for (Index<Object> index : indexes) {
                int score = index instanceof ScoredIndex scored ? scored.score(query)
                        : index.canHandle(query) ? 1 : 0;
                if (score > bestScore) {
                    best = index;
                    bestScore = score;
                }
            }
            Iterable<Object> positions = best == null ? null : best.getPositions(query);
            if (positions == null
                    || (positions instanceof Collection<?> c && c.size() > count() / SCAN_SHARE)) {
                // a document by position costs ~3x its share of a scan (a B-tree lookup
                // each): when the index selects a large share, the scan is cheaper
                return matchDocuments(query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
            }
            // a position a concurrent delete removed has no document any more
            Stream<Document> documents = StreamSupport.stream(positions.spliterator(), false)
                    .map(this::getDocument).filter(Objects::nonNull);
            return matchDocumentsFromStream(documents, query, orderBy, numberToSkip, limit,
                    batchSize, fieldSelector);
        }

        @Override
        public synchronized List<Document> insertDocuments(List<Document> documents, boolean ordered) {
            batching = true;
            try {
                return super.insertDocuments(documents, ordered);
            } finally {
                batching = false;
                int size = pendingSize;
                pendingSize = 0;
                if (size != 0) {
                    updateDataSize(size);
                }
            }
        }
    }

    /** The one store of this process (H2Database keeps its own reference private). */
    private static MVStore store;

    static <K, V> MVMap<K, V> openIndexMap(MVStore mvStore, String name) {
        return mvStore.openMap(
                name, new MVMap.Builder<K, V>().keyType(new IndexKeyType()).valueType(new StoreType()));
    }

    /** A collection's documents: _id (ObjectDataType order) -> document, both as StoreType. */
    static <K, V> MVMap<K, V> openDataMap(MVStore mvStore, String name) {
        return mvStore.openMap(
                name, new MVMap.Builder<K, V>().keyType(new StoreType()).valueType(new StoreType()));
    }

    /**
     * Once per store: re-sort index maps written in H2's serialized-bytes key order into
     * IndexKeyType's order (copy, drop, rename), then record the order in the store.
     */
    static void migrateIndexOrder(MVStore mvStore) {
        MVMap<String, String> format = mvStore.openMap(FORMAT_MAP);
        if ("value".equals(format.get(INDEX_ORDER))) {
            return;
        }
        List<String> names = new ArrayList<>();
        for (String name : mvStore.getMapNames()) {
            if (name.contains(INDEX_MAP)) {
                names.add(name);
            }
        }
        for (String name : names) {
            MVMap<Object, Object> old = mvStore.openMap(name);
            MVMap<Object, Object> sorted = openIndexMap(mvStore, name + "#sorted");
            for (Map.Entry<Object, Object> e : old.entrySet()) {
                sorted.put(e.getKey(), e.getValue());
            }
            mvStore.removeMap(old);
            mvStore.renameMap(sorted, name);
        }
        format.put(INDEX_ORDER, "value");
        mvStore.commit();
        if (!names.isEmpty()) {
            System.err.println("MongoServerMain: re-sorted " + names.size() + " index maps");
        }
    }

    /**
     * Index maps opened with IndexKeyType (as UniqueIndex), data maps with StoreType (as
     * DataCollection);
     * ``insert`` answers ``n`` = all documents even when some hit write errors: fixed.
     */
    static final class Database extends H2Database {
        private static final long SLOW_MS = Long.getLong("mongo.slowms", 500);

        /** What a slow command selected: find's filter, aggregate's pipeline, or the first
         *  update's / delete's ``q`` (their filters live in ``updates[]`` / ``deletes[]``). */
        private static Object slowShape(Document command) {
            for (String key : List.of("filter", "pipeline")) {
                if (command.get(key) != null) {
                    return command.get(key);
                }
            }
            for (String key : List.of("updates", "deletes")) {
                if (command.get(key) instanceof List<?> ops && !ops.isEmpty()
                        && ops.get(0) instanceof Document first) {
                    return first.get("q") + (ops.size() > 1 ? " (+" + (ops.size() - 1) + " more)" : "");
                }
            }
            return null;
        }

        Database(String name, MVStore store, CursorRegistry cursors) {
            super(name, store, cursors);
        }

        @Override
        protected Index<Object> openOrCreateUniqueIndex(
                String collectionName, String indexName, List<IndexKey> keys, boolean sparse) {
            String name = getFullCollectionNamespace(collectionName) + INDEX_MAP + indexName;
            return new UniqueIndex(openIndexMap(store, name), indexName, keys, sparse);
        }

        @Override
        protected Index<Object> openOrCreateSecondaryIndex(
                String collectionName, String indexName, List<IndexKey> keys, boolean sparse) {
            if (sparse || keys.stream().anyMatch(k -> k.getKey().contains("."))) {
                return super.openOrCreateSecondaryIndex(collectionName, indexName, keys, sparse);
            }
            String name = getFullCollectionNamespace(collectionName) + SECONDARY_MAP + indexName;
            return new SecondaryIndex(openIndexMap(store, name), indexName, keys);
        }

        @Override
        protected void dropIndex(MongoCollection<Object> collection, String indexName) {
            super.dropIndex(collection, indexName);
            String name = getFullCollectionNamespace(collection.getCollectionName())
                    + SECONDARY_MAP + indexName;
            if (store.hasMap(name)) {
                store.removeMap(name);
            }
        }

        /** Held by the commands that change a database's collections and indexes: upstream
         *  checks for a collection or index, then creates it, so two clients initialising
         *  the same new database at once (ingesters started together) could both create
         *  one, leaving a collection without its {@code _id_} index in the namespace list. */
        private final Object ddl = new Object();
        private static final Set<String> DDL_COMMANDS = Set.of(
                "create", "createindexes", "drop", "dropdatabase", "dropindexes",
                "deleteindexes", "renamecollection");

        @Override
        protected synchronized MongoCollection<Object> resolveOrCreateCollection(
                String collectionName) { // an insert's implicit create: check and create at once
            return super.resolveOrCreateCollection(collectionName);
        }

        @Override
        public synchronized MongoCollection<Object> createCollectionOrThrowIfExists(
                String collectionName, CollectionOptions options) {
            return super.createCollectionOrThrowIfExists(collectionName, options);
        }

        @Override
        protected MongoCollection<Object> openOrCreateCollection(
                String collectionName, CollectionOptions options) {
            String fullName = getFullCollectionNamespace(collectionName);
            MVMap<Object, Document> data = openDataMap(store, DATA_MAP + fullName);
            MVMap<String, Object> meta = store.openMap(META_MAP + fullName);
            return new DataCollection(this, collectionName, options, data, meta, cursorRegistry);
        }

        @Override
        public Document handleCommand(
                Channel channel, String command, Document query, DatabaseResolver resolver,
                Oplog oplog) {
            if ("iotFedIndexStats".equals(command)) {
                Document stats = new Document("rangeQueries", KeyRanges.QUERIES.get())
                        .append("lastCandidates", KeyRanges.LAST_CANDIDATES.get());
                return stats.append("ok", 1.0);
            }
            long t0 = System.nanoTime();
            Document result;
            if (DDL_COMMANDS.contains(command.toLowerCase(Locale.ROOT))) {
                synchronized (ddl) {
                    result = super.handleCommand(channel, command, query, resolver, oplog);
                }
            } else {
                result = super.handleCommand(channel, command, query, resolver, oplog);
            }
            long ms = (System.nanoTime() - t0) / 1_000_000;
            if (ms >= SLOW_MS && !"insert".equalsIgnoreCase(command)) {
                // MongoDB's slow-operation log, in one line: what held the collection
                String shape = String.valueOf(slowShape(query));
                System.err.println("MongoServerMain: slow " + command + " " + query.get(command)
                        + " " + ms + " ms: " + shape.substring(0, Math.min(300, shape.length())));
            }
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

    /**
     * The store, without H2's own auto-commit (a background thread once a second, and
     * inline in a write once enough is unsaved): the Backend commits, between commands.
     * It becomes the process's store (Database opens its maps there).
     */
    static MVStore openStore(String file, int cacheMB) {
        store = new MVStore.Builder().fileName(file).cacheSize(cacheMB)
                .autoCommitDisabled().autoCommitBufferSize(0).open();
        return store;
    }

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
        store = openStore(args[2], cacheMB);
        migrateIndexOrder(store);
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
        // Netty serves each connection on one event-loop thread, shared by every connection
        // assigned to it (default: 2 x cores = 4): a long query stalled the other clients
        // on its thread, whatever their collection. One thread per connection, in practice.
        int workers = Integer.getInteger("mongo.workerThreads", 64);
        server.bind(new InetSocketAddress(host, port), 1, workers);
        System.err.println("MongoServerMain: listening on " + host + ":" + port + " store " + args[2]
                + " durability " + durability + (fsync ? "+fsync" : ""));
        Thread.currentThread().join(); // netty threads serve; wait for a signal
    }
}
