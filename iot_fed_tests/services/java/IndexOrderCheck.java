// Checks MongoServerMain.IndexKeyType's shortcuts against ValueComparator, whose order the
// index maps are sorted in: the same sign for random pairs of ints, longs, doubles (also
// -0.0, NaN, infinities, integral values at and beyond 2^31 and 2^53), strings, ObjectIds,
// dates and mixed types, raw and normalised as the unique index stores them.
// Usage: java -cp 'classes:libs/*:.' IndexOrderCheck [pairs]; prints "ok <n>" or exits 1.

import de.bwaldvogel.mongo.backend.KeyValue;
import de.bwaldvogel.mongo.backend.ValueComparator;
import de.bwaldvogel.mongo.bson.ObjectId;
import java.time.Instant;
import java.util.Random;

public final class IndexOrderCheck {
    private static final double[] EDGES = {
        0.0, -0.0, 1.0, -1.0, 0.5, Double.NaN, Double.POSITIVE_INFINITY,
        Double.NEGATIVE_INFINITY, 2147483647.0, 2147483648.0, -2147483648.0, 2147483648.5,
        -2147483649.5, 9007199254740992.0, 9007199254740993.0, 1e18, -1e18, 1e300,
    };

    private static Object value(Random rnd) {
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

    public static void main(String[] args) {
        int pairs = args.length > 0 ? Integer.parseInt(args[0]) : 200_000;
        Random rnd = new Random(13);
        ValueComparator order = ValueComparator.asc();
        for (int i = 0; i < pairs; i++) {
            Object a = value(rnd);
            Object b = value(rnd);
            if (rnd.nextBoolean()) { // as the unique index stores them
                a = new KeyValue(a).normalized().get(0);
                b = new KeyValue(b).normalized().get(0);
            }
            int want = Integer.signum(order.compare(a, b));
            int got = Integer.signum(MongoServerMain.IndexKeyType.compareValues(a, b));
            if (want != got) {
                System.out.println("mismatch " + a + " (" + a.getClass().getSimpleName() + ") vs "
                        + b + " (" + b.getClass().getSimpleName() + "): " + got + " != " + want);
                System.exit(1);
            }
        }
        System.out.println("ok " + pairs);
    }
}
