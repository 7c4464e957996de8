//! Reading items ahead of the work on earlier ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// Calls `read` on each of `items` on `readers` separate threads, and `each` on
/// this thread with every item and what was read for it, in the order of
/// `items`. Readers run up to `queued + readers` items ahead of the one `each`
/// has, so at most `queued + readers + 1` results are held at once. One reader
/// suits a local disk; several keep several requests in flight on storage whose
/// round trips, not bandwidth, bound one stream. Both sides stop once
/// `interrupt` is set.
pub fn read_ahead<T: Sync, R: Send>(
    items: &[T],
    queued: usize,
    readers: usize,
    interrupt: &AtomicBool,
    read: impl Fn(&T) -> R + Sync,
    mut each: impl FnMut(&T, R),
) {
    let readers = readers.clamp(1, items.len().max(1));
    // How far past the last item handed to `each` readers may take items.
    let window = queued + readers;
    struct Progress {
        /// The next item a reader takes.
        next: usize,
        /// Items handed to `each` so far, counting the one it has.
        done: usize,
        /// Set when this side stops early: readers stop too.
        stop: bool,
    }
    let progress = Mutex::new(Progress {
        next: 0,
        done: 0,
        stop: false,
    });
    let moved = Condvar::new();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, R)>();
        for _ in 0..readers {
            let (tx, read, progress, moved) = (tx.clone(), &read, &progress, &moved);
            scope.spawn(move || {
                loop {
                    let i = {
                        let Ok(mut p) = progress.lock() else { return };
                        while !p.stop && p.next < items.len() && p.next >= p.done + window {
                            p = match moved.wait(p) {
                                Ok(p) => p,
                                Err(_) => return,
                            };
                        }
                        if p.stop || p.next >= items.len() {
                            return;
                        }
                        p.next += 1;
                        p.next - 1
                    };
                    if interrupt.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(item) = items.get(i) else { return };
                    if tx.send((i, read(item))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut early: BTreeMap<usize, R> = BTreeMap::new();
        let mut want = 0usize;
        'results: for (i, result) in rx.iter() {
            early.insert(i, result);
            while let Some(result) = early.remove(&want) {
                if interrupt.load(Ordering::Relaxed) {
                    break 'results;
                }
                // Counted as handed over first, so that the readers fetch the
                // next items while `each` works on this one.
                if let Ok(mut p) = progress.lock() {
                    p.done = want + 1;
                }
                moved.notify_all();
                if let Some(item) = items.get(want) {
                    each(item, result);
                }
                want += 1;
            }
        }
        if let Ok(mut p) = progress.lock() {
            p.stop = true;
        }
        moved.notify_all();
        drop(rx);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn results_arrive_in_order_whatever_the_readers_finish_first() {
        let items: Vec<usize> = (0..200).collect();
        for readers in [1, 2, 8] {
            let mut seen = Vec::new();
            read_ahead(
                &items,
                1,
                readers,
                &AtomicBool::new(false),
                |&i| {
                    // Later items finish first now and then.
                    if i % 7 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    i * 2
                },
                |&i, r| {
                    assert_eq!(r, i * 2);
                    seen.push(i);
                },
            );
            assert_eq!(seen, items, "{readers} readers");
        }
    }

    #[test]
    fn readers_stay_within_the_window() {
        let items: Vec<usize> = (0..100).collect();
        let started = AtomicUsize::new(0);
        let (queued, readers) = (2, 4);
        read_ahead(
            &items,
            queued,
            readers,
            &AtomicBool::new(false),
            |_| started.fetch_add(1, Ordering::SeqCst),
            |&i, _| {
                // Items 0..i have been handed over before this one.
                let ahead = started.load(Ordering::SeqCst);
                assert!(
                    ahead <= i + 1 + queued + readers,
                    "{ahead} read at item {i}"
                );
            },
        );
        assert_eq!(started.load(Ordering::SeqCst), items.len());
    }

    #[test]
    fn an_interrupt_stops_both_sides() {
        let items: Vec<usize> = (0..1000).collect();
        let stop = AtomicBool::new(false);
        let mut handled = 0;
        read_ahead(
            &items,
            0,
            4,
            &stop,
            |&i| i,
            |&i, _| {
                handled += 1;
                if i == 10 {
                    stop.store(true, Ordering::Relaxed);
                }
            },
        );
        assert_eq!(handled, 11);
    }
}
