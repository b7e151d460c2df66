// Package filelock is a dlock driver for processes on one host, built on
// flock(2). The kernel releases a lock the moment its holder's process dies,
// so a crashed holder never blocks anyone; a waiter wakes on an inotify event
// when the holder lets the lock file go (closes it, or touches it after
// unlocking it: see "Files"), not on a timer.
//
//	c, err := filelock.New("/run/myapp/locks") // or dlock.Open(ctx, "file:///run/myapp/locks")
//
// # URLs
//
// The scheme is "file" (Scheme):
//
//   - file:///absolute/dir keeps the locks in dir, made (mode 0700, with
//     any missing parents) if missing. file://localhost/absolute/dir is
//     the same.
//   - file:// keeps them in DefaultDir: $XDG_RUNTIME_DIR/dlock, else
//     $TMPDIR/dlock-EUID (/tmp/dlock-EUID without $TMPDIR), checked before
//     use as described under "The directory".
//
// There are no query parameters and no environment variables of the
// driver's own; XDG_RUNTIME_DIR and TMPDIR choose the default directory. Any
// other host, a relative path (file:dir) or a query is an invalid argument.
// New(dir) is the same as the URL file://dir ("" for file://).
//
// The engine is the kernel of one host: processes sharing the locks must
// share the host and a directory on a local file system, and only they may
// be able to write to it (see "The directory"). There is no TTL on the
// engine's side: a lock is held until its holder releases it or its file
// is closed (the holder's death closes it). The dlock TTL only sets how
// often a holder checks that its file is still the lock's (every TTL/3):
// the watch described under "Files" reports most changes at once, and the
// check catches the rest.
//
// # Files
//
// Each lock is a file in one directory, named NAME.lock, where NAME is the
// lock's name with every byte but [A-Za-z0-9_-] written as %XX ("jobs/nightly"
// is jobs%2Fnightly.lock), or "~" and the hex SHA-256 of the name when that
// is longer than 200 bytes. Versions of dlock before this naming called the
// files n-NAME.lock and h-HASH.lock: a lock they hold is not seen by this
// one, so do not use both on one directory at once (tokens still increase
// across the change: see below). Lock files are opened without following
// symbolic links: a symlink where a lock file goes is an error. Lock files
// are never removed: removing one while it is held would let a second
// process lock a new file of the same name. Holders watch the directory,
// and the moment a held file is removed, renamed or replaced, or the
// directory itself is moved, the lease is reported lost (driver.Lock.Lost
// closes); anything else that makes the path lead elsewhere (a parent
// moved) is noticed at the next renewal.
//
// A read-write lock uses the lock file NAME.lock too, and beside it the
// turnstile file NAME.writer (see "Read-write locks"); a semaphore uses
// NAME.sem and NAME.permit1 to NAME.permitN (see "Semaphores"); an
// exclusive holder's token and value are in NAME.leader (see "Elections").
// None of them is ever removed, and all are opened as lock files are (never
// through a symbolic link). A permit file is watched as a lock file is: removed,
// renamed or replaced, it ends its lease. NAME.writer and NAME.sem carry no
// lease: replaced, NAME.writer loses the waiting writers' marks until they
// next wake (each wake-up looks again), and NAME.sem the claims on the
// limit until its holders and waiters of the moment are gone (a request
// with another limit is not refused meanwhile).
//
// A client keeps the lock file (and the leader file) of the names it
// released last open, unlocked, so that taking such a name again costs no
// open(2) and no close(2): up to 128 names across the clients of a process,
// closed when the client is. Where closing the file would have woken
// waiters and observers, a release that keeps it does something their
// watches see as well: it sets the lock file's times to now (futimens(2),
// IN_ATTRIB) after unlocking it, and rewrites the leader file's first byte,
// unchanged (IN_MODIFY), after dropping its mark. A kept lock file is
// looked up at its name once locked, as every grant's file is; a removal
// or rename of any file in the directory, seen by the client's watch,
// closes all the files it keeps. Permits, lost locks and locks whose file
// was handed out (HeldFile) close their files at the end.
//
// # Read-write locks
//
// A reader (RWMutex.RLock) takes LOCK_SH on the lock file, a writer
// (RWMutex.Lock, and a Mutex of the same name, which is the same thing)
// LOCK_EX; flock(2) keeps readers and writers apart. flock alone would
// let a writer starve: a new LOCK_SH is granted whenever only readers
// hold, however long a writer has waited. So a writer that has to wait
// marks the lock's turnstile file NAME.writer until it gets the lock or
// gives up: an open file description read lock on it (fcntl
// F_OFD_SETLK), which waiting writers hold side by side. A reader looks
// for a mark (F_OFD_GETLK, which takes nothing) before it takes LOCK_SH,
// and while there is one it waits for a close of the turnstile file, by
// inotify. The kernel drops a mark with its holder's last descriptor, so
// a writer that dies while waiting lets readers in at once.
//
// What this guarantees, across processes of the host: a reader that looks
// after a writer began waiting does not get in before that writer (nor
// before any writer waiting with it); the readers a writer waits for are
// the ones that held, or had already looked, when it began. A reader that
// looked a moment before the writer marked may still take its LOCK_SH
// after it. Writers are not ordered among themselves (no FIFO: flock wakes
// them all and one wins), and a writer that holds lets in whichever of the
// writers and readers waiting behind it is first when it leaves, readers
// only if no writer waits. A reader waits for writers only, never for
// other readers. A writer that does not mark (flock(1), a dlock from before
// read-write locks) can be kept waiting by a stream of readers. Tokens are
// one sequence across readers and writers
// (see "Fencing tokens"); readers' grants count under the tokens file's
// lock, so their shared lock file always holds the newest.
//
// # Semaphores
//
// A semaphore of N permits is N permit files, NAME.permit1 to NAME.permitN:
// a permit is LOCK_EX on one of them, taken on the first that is free, so
// the kernel gives a dead holder's permit back at once (there is no TTL to
// wait for). A waiter watches the N files with inotify and tries them all
// again when one is closed. Waiting so costs N inotify watches per client
// (shared by its waiters) and N open files per waiter, which is why N is at
// most 1024 (more is an invalid argument). Waiters are not FIFO.
//
// N is kept in NAME.sem. Every holder and waiter keeps it open with an open
// file description read lock (fcntl F_OFD_SETLK) for as long as it holds or
// waits; one that finds nobody else there (it gets the write lock) writes
// its N, downgrades to the read lock (atomically), and everyone after it
// reads N and, if theirs differs, is refused with an error matching
// driver.ErrInvalidArgument that names both. The kernel drops the read
// lock with its holder's last descriptor, death included, so once nobody
// holds or waits the next comer may set another N. A name is a semaphore
// or a lock, not both at once: a lock taker that finds NAME.sem read-locked
// (after taking its flock) and a semaphore taker that finds the lock file
// held or a writer waiting (after taking its read lock) are refused the
// same way; each looks after making itself seen, so of two that come at
// once at least one is refused. (The semaphore taker's look is a
// LOCK_EX|LOCK_NB on the lock file that it drops at once: a TryLock at that
// very moment can fail.) Tokens of the permits are one sequence with the
// name's locks' tokens (see "Fencing tokens").
//
// # Elections
//
// An election (dlock.Election) is the lock of its name, LOCK_EX on
// NAME.lock, plus the leader's value, which is kept in the leader file
// NAME.leader. Every exclusive grant (a leader's, a Mutex's, a writer's)
// first marks the leader file with its token: an open file description
// lock (fcntl F_OFD_SETLK) on the byte 2^62+TOKEN, far past any text,
// which it keeps until it gives the lock up (it unlocks it, then closes
// the file or rewrites its first byte, before it unlocks the lock file) or dies, when the kernel
// drops it. Tokens are unique, so marks never contend. It then writes
// "CRC TOKEN LEN\nVALUE" over the file's text (CRC: the CRC-64 of what
// follows it). A reader (Leader, Observe) finds the newest mark with
// F_OFD_GETLK, which takes nothing and tells where the lock starts, so its
// token; it reads the text without a lock and takes it only if it is
// whole and of the marked token, else reads again (backing off from 20 µs
// to 10 ms) while the holder writes; a mark whose text does not come
// within 2 s (a holder stopped in between) is an error matching
// driver.ErrUnavailable. So a reader gets the token and the value of one
// holder, both whole, never a past holder's value with a live holder's
// token, and nobody once the holder is gone. No reader ever makes a holder
// wait: reads take no lock, and never touch the lock file, so they never
// delay a waiter either. A Mutex holder so shows as a leader with an empty
// value; readers and permits show nobody. Proclaim (SetValue) rewrites the
// text the same way, if the lock file is still the holder's; a leader file
// removed or replaced under its holder shows nobody until the holder's
// next Proclaim writes it again (or, replaced between two grants of a
// client that keeps it open, until that client's watch sees the change: a
// moment). A holder whose lock file was replaced
// (see "Files") lets its leader file go as soon as it learns of it; until
// then readers see the newest of the two marks.
//
// Observe wakes on inotify events only, through the client's one inotify
// instance: the leader file made, removed or replaced (the watch on the
// directory), written or closed by a holder (a watch on the file; a
// holder that keeps the file open writes it when it lets go).
// Observers only read, so they never wake each other; an idle observer
// costs nothing while other names, readers and other observers come and
// go. The kernel tells of a dying holder's close a moment before it drops
// the holder's locks, so an observer that finds the holder unchanged after
// a wake-up looks again 1, 10 and 100 ms later. It keeps the directory the
// client opened: once that is removed or moved it reports nobody and sees
// no further change, as a client whose directory is gone cannot lock
// either (open a new one).
//
// Costs and limits: each exclusive grant takes the mark on the leader file
// (opening it, unless its client kept it open: see "Files") and writes the
// text, and drops the mark when it ends; a value is at most 1 MiB. A text shorter than the last leaves that
// one's tail in the file, past what readers read. `dlock run` and
// `dlock elect` hand a copy of the lock file, not of the leader file, to
// the helper process that outlives a killed dlock: observers report nobody
// from dlock's death, before the lock is free. Holders from versions of
// dlock before elections do not write the leader file: they show as
// nobody.
//
// # Status
//
// Status tells which of these a name is and how it is held: a writer (one
// holder), readers (counted in /proc/locks, which leaves out holders not
// visible in this PID namespace: then Holders is 0, unknown), or the
// permits in use of a semaphore and its limit. It finds out by trying the
// locks (and drops them at once), so a TryLock or TryAcquire made at that
// very moment can fail. Waiters are counted by their OFD locks, which
// /proc/locks always shows: every waiting writer and reader read-locks a
// byte of NAME.writer (a writer byte 0, its mark; a reader byte 1, which
// only Status looks at), and every holder and waiter of a permit read-locks
// NAME.sem.
//
// List (dlock.Client.List, `dlock list`) reads the directory and tells
// the names under a prefix that someone holds or waits for now, each with
// its Status, in name order. Since files are never removed, it looks at
// every name ever used in the directory (a lock file, turnstile or limit
// file), so it costs one Status per such name, but reads /proc/locks once;
// it keeps a name only if its lock file is held, or an OFD lock is on its
// turnstile or limit file (a waiter's mark, a semaphore holder's or
// waiter's claim), so names whose files are only left over
// are not listed. Names are unescaped back as given; a hashed one is
// listed as its file name without ".lock" ("~" and the hash) and only
// under the empty prefix. Files no name escapes to are skipped. Each name
// is tried as Status tries it, one after the other: the list is not of
// one instant, and a TryLock made at that moment can fail.
//
// # Fencing tokens
//
// A grant's token is one above both the number in its lock file (a
// permit's: its permit file) and the count in the directory's file
// dlock-tokens (the highest token granted there); both are rewritten under
// the lock. dlock-tokens is synced to disk
// (fdatasync) once per 1024 grants, ahead of them, and a count written in an
// earlier boot continues above what was synced, so that a system crash
// cannot make a token repeat. Tokens so keep increasing across processes,
// crashes and reboots, and across a lock file that was removed, replaced or
// found holding stray text (which counts as 0). They start again only if
// both files are lost: a runtime directory on tmpfs empties at reboot, as
// does `rm -r` of the directory. dlock-tokens is locked (flock) for its
// update only; an exclusive holder reads its lock file before and writes
// it after, a reader does both under that lock. A holder killed in between
// leaves a token counted and never used, which is harmless: tokens may
// skip. A client looks dlock-tokens up at its name when it first uses it
// and again after each removal or rename in the directory that its watch
// reports (at every grant if it cannot watch), and counts in the file it
// finds there. The clients of one process that use one directory share
// one open dlock-tokens: a grant that finds another client's turn with it
// queues, and the client whose turn it is, once it has the flock, counts
// its own grant and every grant queued by then, in the order they came,
// with one read and one write of the file (and a reader's lock file read
// and written as above). Only
// that client polls the flock, backing off from 20 µs to 10 ms while
// another process updates it; a client whose grant waits in the queue
// stops at its ctx and at its Close (once its grant is being counted, it
// waits for that read and write to end).
//
// # The directory
//
// The default directory must belong to the effective user and be
// writable by nobody else, and it must not be a symbolic link; its parent
// must be owned by root or that user and, if others may write to it, sticky
// (see DefaultDir). Otherwise opening fails, naming the directory and what
// was expected. A directory given in the URL or to New is the caller's
// choice and is not checked that way: anyone who can write to it can break
// its locks (remove or replace a held lock file), so give one that only the
// users sharing the locks can write to. Lock files are made with mode 0600,
// so a directory serves one user (and root).
//
// The directory must be on a local file system (a disk, tmpfs, overlayfs,
// FUSE other than a network one). Opening refuses NFS, SMB/CIFS, 9p, AFS,
// CephFS, Coda, NCP and network FUSE file systems such as sshfs: there
// flock(2) is emulated with per-process byte-range locks or covers one client
// only, and inotify sees no other host's changes.
//
// # Waiting and inotify
//
// One inotify instance per driver (per Client) serves all its waiters,
// holders and observers. If the kernel's queue overflows, every waiter
// wakes and retries, every holder checks its file and every observer
// looks again. A process whose user has reached
// fs.inotify.max_user_instances (or max_user_watches) cannot wait on events:
// a waiting Acquire then fails at once with an error that matches
// driver.ErrUnavailable and names the limit (a blocking Lock retries it with
// backoff, so it still gets the lock, up to dlock.RetryMaxBackoff after it
// is freed instead of at once), and a holder goes without the watch,
// learning of a removed or replaced file at its next renewal instead
// (TTL/3). Observe then fails with such an error too; an observer that
// cannot watch a leader file it found (max_user_watches) looks again
// after a backoff from 50 ms to 5 s, or at the next event on the
// directory.
//
// Errors of this host that may clear by themselves (a full disk or quota,
// open-file or memory limits) match driver.ErrUnavailable, so a blocking
// Lock retries them; everything else (a bad or untrusted directory, a
// symlink where a lock file goes, an I/O error) is reported at once.
//
// Linux only: inotify is what makes waiting event-driven.
package filelock
