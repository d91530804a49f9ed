package ryze.examples;

import java.util.ArrayDeque;
import java.util.HashSet;
import java.util.Set;

/** The last {@code size} ryze-ids seen; {@link #firstTime} is true once per id in the window. */
final class SeenWindow {
    private final int size;
    private final Set<String> ids = new HashSet<>();
    private final ArrayDeque<String> order = new ArrayDeque<>();

    SeenWindow(int size) {
        if (size < 1) {
            throw new IllegalArgumentException("the window must hold at least one id, not " + size);
        }
        this.size = size;
    }

    boolean firstTime(String id) {
        if (!ids.add(id)) {
            return false;
        }
        order.addLast(id);
        if (order.size() > size) {
            ids.remove(order.removeFirst());
        }
        return true;
    }
}
