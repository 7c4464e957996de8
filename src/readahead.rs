//! Reading items ahead of the work on earlier ones.

use std::sync::atomic::{AtomicBool, Ordering};

/// Calls `read` on each of `items` in order on a separate thread, and `each` on
/// this thread with every item and what was read for it. The reader runs up to
/// `queued` results ahead of the one `each` has and reads the next meanwhile, so
/// at most `queued + 2` results are held at once. Both sides stop once
/// `interrupt` is set.
pub fn read_ahead<T: Sync, R: Send>(
    items: &[T],
    queued: usize,
    interrupt: &AtomicBool,
    read: impl Fn(&T) -> R + Sync,
    mut each: impl FnMut(&T, R),
) {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, R)>(queued);
        let read = &read;
        scope.spawn(move || {
            for (i, item) in items.iter().enumerate() {
                if interrupt.load(Ordering::Relaxed) || tx.send((i, read(item))).is_err() {
                    break;
                }
            }
        });
        for (i, result) in rx {
            if interrupt.load(Ordering::Relaxed) {
                break;
            }
            each(&items[i], result);
        }
    });
}
