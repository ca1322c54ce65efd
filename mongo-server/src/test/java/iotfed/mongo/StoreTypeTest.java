// Checks MongoServerMain's storage pieces against mongo-java-server's own, on random data:
//  1. IndexKeyType's comparison shortcuts give ValueComparator's sign (the order the index
//     maps are sorted in) for ints, longs, doubles (-0.0, NaN, infinities, integral values
//     at and beyond 2^31 and 2^53), strings, ObjectIds, dates, mixed; raw and normalised;
//  2. BsonCodec writes BsonEncoder's bytes and documentSize is their length (utf8Length
//     is String.getBytes(UTF_8)'s, lone surrogates included);
//  3. StoreType reads back what it wrote (documents, also one of 3 MB, keys, positions,
//     Missing, and Java types BSON has no type for), and ObjectDataType's (older) encoding.
// A JUnit test (mvn test); a mismatch fails it with the values that disagree.
package iotfed.mongo;

import de.bwaldvogel.mongo.backend.KeyValue;
import de.bwaldvogel.mongo.backend.Missing;
import de.bwaldvogel.mongo.backend.ValueComparator;
import de.bwaldvogel.mongo.bson.BinData;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.bson.ObjectId;
import de.bwaldvogel.mongo.wire.bson.BsonEncoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Random;
import java.util.UUID;
import org.h2.mvstore.WriteBuffer;
import org.h2.mvstore.type.ObjectDataType;
import org.junit.jupiter.api.Test;

class StoreTypeTest {
    private static final double[] EDGES = {
        0.0, -0.0, 1.0, -1.0, 0.5, Double.NaN, Double.POSITIVE_INFINITY,
        Double.NEGATIVE_INFINITY, 2147483647.0, 2147483648.0, -2147483648.0, 2147483648.5,
        -2147483649.5, 9007199254740992.0, 9007199254740993.0, 1e18, -1e18, 1e300,
    };
    private static final String[] STRINGS = {"", "a", "moteid", "é", "温度", "\uD83D\uDE00"};
    private static final char[] CHARS = {'a', 'é', '温', '\uD83D', '\uDE00', '\uD800', '\uDFFF'};

    private static Object scalar(Random rnd) {
        return switch (rnd.nextInt(9)) {
            case 0 -> rnd.nextInt(7) - 3;
            case 1 -> (long) rnd.nextInt(7) - 3;
            case 2 -> rnd.nextLong() >> rnd.nextInt(64);
            case 3 -> EDGES[rnd.nextInt(EDGES.length)];
            case 4 -> (rnd.nextInt(9) - 4) / 2.0 + (rnd.nextBoolean() ? 0 : 2147483647.0);
            case 5 -> "s" + rnd.nextInt(5);
            case 6 -> new ObjectId(new byte[] {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (byte) rnd.nextInt(4)});
            case 7 -> Instant.ofEpochMilli(rnd.nextInt(5));
            default -> rnd.nextGaussian() * Math.pow(10, rnd.nextInt(20));
        };
    }

    private static Object bsonValue(Random rnd, int depth) {
        return switch (rnd.nextInt(depth > 2 ? 8 : 11)) {
            case 0, 1 -> scalar(rnd);
            case 2 -> STRINGS[rnd.nextInt(STRINGS.length)] + rnd.nextInt(100);
            case 3 -> null;
            case 4 -> rnd.nextBoolean();
            case 5 -> new BinData(new byte[rnd.nextInt(4)]);
            case 6 -> UUID.randomUUID();
            case 7 -> Instant.ofEpochMilli(rnd.nextLong() >> 20);
            case 8, 9 -> document(rnd, depth + 1);
            default -> {
                List<Object> list = new ArrayList<>();
                for (int i = rnd.nextInt(4); i > 0; i--) {
                    list.add(bsonValue(rnd, depth + 1));
                }
                yield list;
            }
        };
    }

    private static Document document(Random rnd, int depth) {
        Document doc = new Document();
        for (int i = rnd.nextInt(12); i > 0; i--) {
            doc.put(STRINGS[rnd.nextInt(STRINGS.length)] + i, bsonValue(rnd, depth));
        }
        return doc;
    }

    /** A field name of random characters, lone surrogates included (BSON writes '?'). */
    private static String oddKey(Random rnd) {
        StringBuilder sb = new StringBuilder();
        for (int j = rnd.nextInt(6); j > 0; j--) {
            sb.append(CHARS[rnd.nextInt(CHARS.length)]);
        }
        return sb.toString();
    }

    private static void fail(String what) {
        throw new AssertionError("mismatch: " + what);
    }

    private static Object roundTrip(ObjectDataType writer, ObjectDataType reader, Object v) {
        WriteBuffer out = new WriteBuffer();
        writer.write(out, v);
        out.put((byte) 42); // the next value must start where reading stopped
        ByteBuffer in = out.getBuffer();
        in.flip();
        Object back = reader.read(in);
        if (in.get() != 42 || in.hasRemaining()) {
            fail("read stopped at the wrong place for " + v);
        }
        return back;
    }

    /** Equal, where any two Missing are (Java deserialisation makes new instances). */
    private static boolean same(Object a, Object b) {
        if (a instanceof KeyValue ka && b instanceof KeyValue kb) {
            if (ka.size() != kb.size()) {
                return false;
            }
            for (int i = 0; i < ka.size(); i++) {
                if (!same(ka.get(i), kb.get(i))) {
                    return false;
                }
            }
            return true;
        }
        return a instanceof Missing ? b instanceof Missing : Objects.equals(a, b);
    }

    private static Document values0() {
        return new Document("moteid", 1).append("t", 20.5);
    }

    @Test
    void orderCodecAndRoundTripsAgreeWithMongoJavaServer() {
        check(2000);
    }

    static void check(int n) {
        Random rnd = new Random(13);
        ValueComparator order = ValueComparator.asc();
        for (int i = 0; i < 100 * n; i++) { // 1. order
            Object a = scalar(rnd);
            Object b = scalar(rnd);
            if (rnd.nextBoolean()) { // as the unique index stores them
                a = new KeyValue(a).normalized().get(0);
                b = new KeyValue(b).normalized().get(0);
            }
            int want = Integer.signum(order.compare(a, b));
            int got = Integer.signum(MongoServerMain.IndexKeyType.compareValues(a, b));
            if (want != got) {
                fail(a + " (" + a.getClass().getSimpleName() + ") vs " + b + " ("
                        + b.getClass().getSimpleName() + "): " + got + " != " + want);
            }
        }
        for (int i = 0; i < n; i++) {
            StringBuilder sb = new StringBuilder();
            for (int j = rnd.nextInt(6); j > 0; j--) {
                sb.append(CHARS[rnd.nextInt(CHARS.length)]);
            }
            String str = sb.toString();
            int want = str.getBytes(java.nio.charset.StandardCharsets.UTF_8).length;
            if (MongoServerMain.BsonCodec.utf8Length(str) != want) {
                fail("UTF-8 length of " + str.chars().boxed().toList());
            }
        }
        MongoServerMain.StoreType store = new MongoServerMain.StoreType();
        ObjectDataType older = new ObjectDataType();
        for (int i = 0; i < n; i++) {
            Document doc = document(rnd, 0); // 2. BSON bytes and size
            Document odd = new Document(doc);
            odd.put(oddKey(rnd), odd.size());
            for (Document d : List.of(doc, odd)) {
                ByteBuf w = Unpooled.buffer();
                ByteBuf g = Unpooled.buffer();
                BsonEncoder.encodeDocument(d, w);
                MongoServerMain.BsonCodec.writeDocument(d, g);
                if (!ByteBufUtil.equals(w, g) || MongoServerMain.BsonCodec.documentSize(d) != w.writerIndex()) {
                    fail("BSON bytes or size of " + d.keySet().stream().map(k -> k.chars().boxed().toList()).toList());
                }
            }
            ByteBuf want = Unpooled.buffer();
            ByteBuf got = Unpooled.buffer();
            BsonEncoder.encodeDocument(doc, want);
            MongoServerMain.BsonCodec.writeDocument(doc, got);
            if (!ByteBufUtil.equals(want, got)) {
                fail("BSON bytes of " + doc);
            }
            if (MongoServerMain.BsonCodec.documentSize(doc) != want.writerIndex()) {
                fail("size of " + doc + ": " + MongoServerMain.BsonCodec.documentSize(doc)
                        + " != " + want.writerIndex());
            }
            Object[] values = { // 3. round trips, this format and the older one
                doc, new KeyValue(scalar(rnd), bsonValue(rnd, 2)), scalar(rnd), Missing.getInstance(),
                new KeyValue(Missing.getInstance(), 7), (short) 3, new Document("f", 1.5f),
            };
            for (Object v : values) {
                Object back = roundTrip(store, store, v);
                Object old = roundTrip(older, store, v);
                if (!same(v, back) || !same(v, old)) {
                    fail("round trip of " + v + ": " + back + " / " + old);
                }
            }
        }
        Document big = new Document("s", "x".repeat(3 << 20)); // past the kept scratch size
        if (!same(big, roundTrip(store, store, big))
                || !same(values0(), roundTrip(store, store, values0()))) {
            fail("round trip after a 3 MB document");
        }
    }
}
