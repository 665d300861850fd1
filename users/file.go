package users

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// The file store is an append-only log in one file, chosen over an
// embedded database (bbolt, SQLite) for what a refresh-token store does:
// small records, one write per rotation, each of which must be durable
// before it returns. Appending one record and one fsync is the least
// work that gives that, it needs no dependency, and a torn write can only
// be at the end, where a checksum finds it. The file is rewritten
// (compacted) when dead records outweigh live ones.
//
// Layout: the 8-byte magic "TMUSERS1", then records, each
//
//	u32 payload length | u32 CRC-32C of payload | payload
//
// and a payload is
//
//	u8 op (1 put, 2 delete) | u64 version | u16 identity length | identity |
//	u32 data length | data (the sealed token; empty for a delete)
//
// all big-endian.

const (
	fileMagic = "TMUSERS1"
	opPut     = 1
	opDelete  = 2
	// maxRecord bounds a record, so a corrupt length cannot make Open
	// allocate without limit.
	maxRecord = 1 << 20
	// compactMin is the smallest file worth compacting.
	compactMin = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FileStore is a [Store] in one local file: an append-only log that
// each write extends and fsyncs before returning. It holds in memory only
// where each identity's entry lies in the file, not the entries.
//
// One FileStore at a time may use a file: on Unix, OpenFile takes an
// exclusive lock (flock) and fails with [ErrLocked] while another store,
// in this process or another, has the file open. For many replicas, use the PostgreSQL store (module
// github.com/go-tokenmanager/tokenmanager/pgstore).
//
// A FileStore is safe for concurrent use by multiple goroutines; writes
// are serialized. It is a [Locker] within the process.
type FileStore struct {
	path string

	mu     sync.RWMutex // guards everything below
	f      *os.File
	size   int64            // bytes in the file, all of them valid records
	live   int64            // bytes of the records index points at
	index  map[string]entry // identity → its latest put
	closed bool

	lmu   sync.Mutex           // guards locks
	locks map[string]*heldLock // identities locked or waited for; gone when neither
}

// heldLock is an identity's lock (Lock): a token in turn while held.
type heldLock struct {
	turn chan struct{}
	refs int // holder and waiters
}

// Lock implements [Locker] within the process, the only one that can use
// the file: two refreshers of one identity in this process (two
// managers, say) take turns. It returns ctx itself. An identity neither
// held nor waited for costs nothing.
func (s *FileStore) Lock(ctx context.Context, identity string) (context.Context, func(), error) {
	s.lmu.Lock()
	if s.locks == nil {
		s.locks = map[string]*heldLock{}
	}
	l := s.locks[identity]
	if l == nil {
		l = &heldLock{turn: make(chan struct{}, 1)}
		s.locks[identity] = l
	}
	l.refs++
	s.lmu.Unlock()
	release := func() {
		s.lmu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, identity)
		}
		s.lmu.Unlock()
	}
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, nil, fmt.Errorf("users: waiting for the identity's lock: %w", ctx.Err())
	}
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			<-l.turn
			release()
		})
	}, nil
}

var _ Locker = (*FileStore)(nil)

// entry is where an identity's latest put lies.
type entry struct {
	version uint64
	off     int64 // of the data
	n       int32 // data length
	rec     int64 // whole record length
}

// OpenFile opens the store in the file at path, creating it (mode 0600)
// if needed. A record torn by a crash during a write is at the end of
// the file; it is cut off. A damaged record with intact records after it
// is no torn write: OpenFile then fails and leaves the file as it is, so
// no later record is lost. Close the store when done.
func OpenFile(path string) (*FileStore, error) {
	f, err := openLocked(path)
	if err != nil {
		return nil, err
	}
	s := &FileStore{path: path, f: f}
	if err := s.load(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// maxOpenTries bounds how often OpenFile opens the file anew because a
// compaction replaced it between the open and the lock.
const maxOpenTries = 100

// afterOpen, when set (by tests), runs between opening the file and
// locking it.
var afterOpen func()

// openLocked opens path and locks it. The lock must be on the file that
// path names once locked: a store compacting meanwhile renames a new
// file over the old one and unlocks the old one, whose lock then proves
// nothing. So after the lock the file is compared with path's, and opened
// again when they differ.
func openLocked(path string) (*os.File, error) {
	for try := 0; ; try++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("users: opening store: %w", err)
		}
		if afterOpen != nil {
			afterOpen()
		}
		if err := lockFile(f); err != nil {
			f.Close()
			return nil, err
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("users: opening store: %w", err)
		}
		named, err := os.Stat(path)
		if err == nil && os.SameFile(held, named) {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("users: opening store: %w", err)
		}
		if try == maxOpenTries {
			return nil, fmt.Errorf("users: opening store: %s was replaced %d times while it was being locked", path, maxOpenTries)
		}
	}
}

// load reads the whole log into the index, cutting off a torn tail.
func (s *FileStore) load() error {
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("users: opening store: %w", err)
	}
	if st.Size() == 0 {
		if _, err := s.f.Write([]byte(fileMagic)); err != nil {
			return fmt.Errorf("users: initializing store: %w", err)
		}
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("users: initializing store: %w", err)
		}
		if err := syncDir(s.path); err != nil {
			return err
		}
		s.size, s.index = int64(len(fileMagic)), map[string]entry{}
		return nil
	}
	data, err := io.ReadAll(io.NewSectionReader(s.f, 0, st.Size()))
	if err != nil {
		return fmt.Errorf("users: reading store: %w", err)
	}
	if !bytes.HasPrefix(data, []byte(fileMagic)) {
		return fmt.Errorf("users: %s is not a refresh-token store file", s.path)
	}
	s.index = map[string]entry{}
	off := int64(len(fileMagic))
	for off < int64(len(data)) {
		n, ok := s.apply(data[off:], off)
		if !ok {
			if intactAfter(data, off) {
				return fmt.Errorf("users: %s is corrupt: the record at byte %d is damaged and intact records follow it; the file is left as it is", s.path, off)
			}
			break // a torn tail: cut it off
		}
		off += n
	}
	if off < int64(len(data)) {
		if err := s.f.Truncate(off); err != nil {
			return fmt.Errorf("users: cutting off a torn record: %w", err)
		}
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("users: cutting off a torn record: %w", err)
		}
	}
	s.size = off
	return nil
}

// intactAfter reports whether a whole record starts anywhere in data
// after the damaged one at off. A write torn by a crash is the last
// thing in the file; a damaged record followed by intact ones is
// corruption, and cutting the file there would lose them.
func intactAfter(data []byte, off int64) bool {
	for i := off + 1; i < int64(len(data)); i++ {
		if _, ok := decodeRecord(data[i:]); ok {
			return true
		}
	}
	return false
}

// record is a decoded record.
type record struct {
	op      byte
	version uint64
	id      string
	dataOff int // of the data in the payload
	dataLen uint32
	len     int64 // of the whole record
}

// decodeRecord decodes the record at the start of b; it reports whether
// b starts with a whole, valid one.
func decodeRecord(b []byte) (record, bool) {
	if len(b) < 8 {
		return record{}, false
	}
	n := binary.BigEndian.Uint32(b)
	if n > maxRecord || int64(len(b)) < 8+int64(n) {
		return record{}, false
	}
	payload := b[8 : 8+n]
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return record{}, false
	}
	if len(payload) < 11 {
		return record{}, false
	}
	op, version := payload[0], binary.BigEndian.Uint64(payload[1:])
	if op != opPut && op != opDelete {
		return record{}, false
	}
	idLen := int(binary.BigEndian.Uint16(payload[9:]))
	if len(payload) < 11+idLen+4 {
		return record{}, false
	}
	dataLen := binary.BigEndian.Uint32(payload[11+idLen:])
	dataOff := 11 + idLen + 4
	if len(payload) != dataOff+int(dataLen) {
		return record{}, false
	}
	return record{op: op, version: version, id: string(payload[11 : 11+idLen]), dataOff: dataOff, dataLen: dataLen, len: 8 + int64(n)}, true
}

// apply decodes the record at the start of b (at file offset off) into
// the index; it reports the record's length and whether it was whole.
func (s *FileStore) apply(b []byte, off int64) (int64, bool) {
	r, ok := decodeRecord(b)
	if !ok {
		return 0, false
	}
	if old, ok := s.index[r.id]; ok {
		s.live -= old.rec
	}
	switch r.op {
	case opPut:
		s.index[r.id] = entry{version: r.version, off: off + 8 + int64(r.dataOff), n: int32(r.dataLen), rec: r.len}
		s.live += r.len
	case opDelete:
		delete(s.index, r.id)
	}
	return r.len, true
}

func encodeRecord(op byte, identity string, version uint64, data []byte) []byte {
	n := 11 + len(identity) + 4 + len(data)
	b := make([]byte, 8+n)
	p := b[8:]
	p[0] = op
	binary.BigEndian.PutUint64(p[1:], version)
	binary.BigEndian.PutUint16(p[9:], uint16(len(identity)))
	copy(p[11:], identity)
	binary.BigEndian.PutUint32(p[11+len(identity):], uint32(len(data)))
	copy(p[15+len(identity):], data)
	binary.BigEndian.PutUint32(b, uint32(n))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(p, castagnoli))
	return b
}

// ErrLocked is wrapped by the error of [OpenFile] when another store has
// the file open.
var ErrLocked = errors.New("users: store file is locked")

// errClosed is returned by a FileStore's methods after Close.
var errClosed = errors.New("users: store is closed")

// maxIdentity bounds an identity in the file (u16 length).
const maxIdentity = 1<<16 - 1

// Load implements [Store].
func (s *FileStore) Load(_ context.Context, identity string) (Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Entry{}, errClosed
	}
	e, ok := s.index[identity]
	if !ok {
		return Entry{}, ErrNotFound
	}
	data := make([]byte, e.n)
	if _, err := s.f.ReadAt(data, e.off); err != nil {
		return Entry{}, fmt.Errorf("users: reading store: %w", err)
	}
	return Entry{Version: e.version, Sealed: data}, nil
}

// Save implements [Store]: it appends the entry and fsyncs the file.
func (s *FileStore) Save(_ context.Context, identity string, e Entry) error {
	if len(identity) > maxIdentity || len(e.Sealed) > maxRecord/2 {
		return errors.New("users: identity or sealed token too large for the file store")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if cur := s.index[identity].version; cur+1 != e.Version {
		return fmt.Errorf("%w: stored version %d, writing version %d", ErrConflict, cur, e.Version)
	}
	return s.append(encodeRecord(opPut, identity, e.Version, e.Sealed))
}

// Delete implements [Store].
func (s *FileStore) Delete(_ context.Context, identity string, version uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	cur, ok := s.index[identity]
	if !ok {
		return nil
	}
	if cur.version != version {
		return fmt.Errorf("%w: stored version %d, deleting version %d", ErrConflict, cur.version, version)
	}
	return s.append(encodeRecord(opDelete, identity, version, nil))
}

// append writes rec at the end, fsyncs, and applies it; the caller holds
// s.mu. A failed write is cut off again so the log stays whole.
func (s *FileStore) append(rec []byte) error {
	if _, err := s.f.WriteAt(rec, s.size); err != nil {
		_ = s.f.Truncate(s.size)
		return fmt.Errorf("users: writing store: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		// After a failed fsync the page cache may hold the record or not
		// (the kernel may have dropped it): neither is known durable.
		_ = s.f.Truncate(s.size)
		return fmt.Errorf("users: syncing store: %w", err)
	}
	n, _ := s.apply(rec, s.size)
	s.size += n
	if s.size > compactMin && s.size > 2*s.live {
		// Best effort: the log is whole either way.
		_ = s.compact()
	}
	return nil
}

// compact rewrites the live entries into a new file and renames it over
// the old one; the caller holds s.mu.
func (s *FileStore) compact() error {
	tmp := s.path + ".compact"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	// The new file replaces the old one under the same lock.
	if err := lockFile(f); err != nil {
		return fail(err)
	}
	buf := []byte(fileMagic)
	index := make(map[string]entry, len(s.index))
	for id, e := range s.index {
		data := make([]byte, e.n)
		if _, err := s.f.ReadAt(data, e.off); err != nil {
			return fail(err)
		}
		rec := encodeRecord(opPut, id, e.version, data)
		index[id] = entry{version: e.version, off: int64(len(buf)) + 8 + 15 + int64(len(id)), n: e.n, rec: int64(len(rec))}
		buf = append(buf, rec...)
	}
	if _, err := f.Write(buf); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fail(err)
	}
	if err := syncDir(s.path); err != nil {
		// The rename happened; the new file is the store from now on.
		s.f.Close()
		s.f, s.index, s.size, s.live = f, index, int64(len(buf)), int64(len(buf)-len(fileMagic))
		return err
	}
	s.f.Close()
	s.f, s.index, s.size, s.live = f, index, int64(len(buf)), int64(len(buf)-len(fileMagic))
	return nil
}

// syncDir fsyncs the directory holding path, so a new or renamed file
// survives a crash.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("users: syncing store directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("users: syncing store directory: %w", err)
	}
	return nil
}

// Close closes the file. Later calls fail; a second Close returns nil.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.f.Close()
}
