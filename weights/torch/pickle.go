package torch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
)

// ErrForbidden is wrapped by the error for a global or opcode the unpickler refuses.
var ErrForbidden = errors.New("torch: forbidden pickle content")

// The values a pickle decodes to. Nothing here ever runs code: a class reference is a
// Global, and calling one of the allowed globals is interpreted by this package.
type (
	// Tuple is a Python tuple.
	Tuple []any
	// List is a Python list (a pointer, because pickles append to it after creation).
	List struct{ Items []any }
	// Dict is a Python dict or collections.OrderedDict, in insertion order.
	Dict struct {
		Keys   []any
		Values []any
		// Attrs is the instance state a BUILD gave the dict (an OrderedDict state dict
		// carries its _metadata this way); it is not part of the items.
		Attrs any
		index map[string]int // position of each string key
	}
	// Global is a reference to module.name, as GLOBAL/STACK_GLOBAL push it.
	Global struct{ Module, Name string }
	// Object is an inert placeholder for an allowed class instance; Args and State are
	// kept for inspection only.
	Object struct {
		Class Global
		Args  Tuple
		State any
	}
	// Storage is a tensor storage named by a persistent id: its bytes are in the archive
	// at data/<Key>.
	Storage struct {
		DType    weights.DType
		Key      string
		Location string
		Numel    int64
		// Base is the element offset of this storage inside storage Key: non-zero only
		// for the views of the legacy format (view_metadata).
		Base int64
	}
	// TensorRef is a tensor as rebuilt by torch._utils._rebuild_tensor_v2: a strided view
	// of a storage. Offset and Stride count elements.
	TensorRef struct {
		Storage      *Storage
		Offset       int64
		Shape        []int64
		Stride       []int64
		RequiresGrad bool
	}
)

// Get returns the value of a string key.
func (d *Dict) Get(key string) (any, bool) {
	i, ok := d.index[key]
	if !ok {
		return nil, false
	}
	return d.Values[i], true
}

// Len returns the number of entries.
func (d *Dict) Len() int { return len(d.Keys) }

func (d *Dict) set(k, v any) {
	if s, ok := k.(string); ok {
		if i, dup := d.index[s]; dup {
			d.Values[i] = v // Python keeps the first position, with the last value
			return
		}
		if d.index == nil {
			d.index = map[string]int{}
		}
		d.index[s] = len(d.Keys)
	}
	d.Keys = append(d.Keys, k)
	d.Values = append(d.Values, v)
}

func (g Global) String() string { return g.Module + "." + g.Name }

// Limits against hostile pickles: the stack, the memo and each container are bounded.
const (
	maxStack = 1 << 20
	maxMemo  = 1 << 22
)

// unpickler is a restricted pickle virtual machine (Lib/pickletools.py documents each
// opcode).
type unpickler struct {
	name    string
	data    []byte
	pos     int
	opAt    int // offset of the opcode being run
	stack   []any
	marks   []int
	memo    map[uint32]any
	persist func(pid any) (any, error)
}

// Unpickle decodes a restricted pickle. persistentLoad resolves BINPERSID ids (may be nil
// to refuse them). name is used in errors.
func Unpickle(name string, data []byte, persistentLoad func(pid any) (any, error)) (any, error) {
	v, _, err := unpickleAt(name, data, 0, persistentLoad)
	return v, err
}

// unpickleAt decodes the pickle starting at data[pos] and returns the position after its
// STOP: the legacy format stores several pickles back to back.
func unpickleAt(name string, data []byte, pos int, persistentLoad func(pid any) (any, error)) (any, int, error) {
	u := &unpickler{name: name, data: data, pos: pos, memo: map[uint32]any{}, persist: persistentLoad}
	v, err := u.run()
	return v, u.pos, err
}

func (u *unpickler) fail(format string, args ...any) error {
	return &weights.FormatError{Format: "torch", File: u.name, Offset: int64(u.opAt), Msg: "pickle: " + fmt.Sprintf(format, args...)}
}

func (u *unpickler) forbid(format string, args ...any) error {
	return &weights.FormatError{Format: "torch", File: u.name, Offset: int64(u.opAt), Msg: "pickle: " + fmt.Sprintf(format, args...), Err: ErrForbidden}
}

func (u *unpickler) take(n uint64) ([]byte, error) {
	if n > uint64(len(u.data)-u.pos) {
		return nil, u.fail("opcode argument of %d bytes runs past the end (truncated)", n)
	}
	b := u.data[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return b, nil
}

// counted reads a little-endian length of size bytes and then that many bytes.
func (u *unpickler) counted(size int) ([]byte, error) {
	n, err := u.uint(size)
	if err != nil {
		return nil, err
	}
	return u.take(n)
}

// countBytes is the width of the length prefix of the string and bytes opcodes.
func countBytes(op byte) int {
	switch op {
	case 0x8c, 'U', 'C': // SHORT_BINUNICODE, SHORT_BINSTRING, SHORT_BINBYTES
		return 1
	case 0x8d, 0x8e: // BINUNICODE8, BINBYTES8
		return 8
	default: // BINUNICODE, BINSTRING, BINBYTES
		return 4
	}
}

func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.take(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

func (u *unpickler) line() (string, error) {
	i := strings.IndexByte(string(u.data[u.pos:min(len(u.data), u.pos+256)]), '\n')
	if i < 0 {
		return "", u.fail("unterminated line argument")
	}
	s := string(u.data[u.pos : u.pos+i])
	u.pos += i + 1
	return s, nil
}

func (u *unpickler) push(v any) error {
	if len(u.stack) >= maxStack {
		return u.fail("stack deeper than %d", maxStack)
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, u.fail("pop from an empty stack")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, u.fail("empty stack")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark returns the items above the last MARK and removes them and the mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, u.fail("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, u.fail("pickle ends without STOP (truncated)")
		}
		u.opAt = u.pos
		op := u.data[u.pos]
		u.pos++
		if op == '.' { // STOP
			if len(u.marks) > 0 {
				return nil, u.fail("STOP with an open MARK")
			}
			return u.pop()
		}
		if err := u.step(op); err != nil {
			return nil, err
		}
	}
}

// step runs one opcode other than STOP.
func (u *unpickler) step(op byte) error {
	if done, err := u.stepValue(op); done {
		return err
	}
	if done, err := u.stepStack(op); done {
		return err
	}
	if done, err := u.stepContainer(op); done {
		return err
	}
	if done, err := u.stepObject(op); done {
		return err
	}
	return u.forbid("opcode 0x%02x (%s) is not allowed", op, opName(op))
}

// stepValue runs the opcodes that push a constant, number, string or bytes (and
// PROTO/FRAME, which push nothing).
func (u *unpickler) stepValue(op byte) (bool, error) {
	switch op {
	case 0x80: // PROTO
		v, err := u.take(1)
		if err != nil {
			return true, err
		}
		if v[0] > 5 {
			return true, u.fail("pickle protocol %d", v[0])
		}
		return true, nil
	case 0x95: // FRAME: an 8-byte length hint; the frame's opcodes follow inline
		_, err := u.take(8)
		return true, err
	case 'N':
		return true, u.push(nil)
	case 0x88:
		return true, u.push(true)
	case 0x89:
		return true, u.push(false)
	case 'J': // BININT
		v, err := u.uint(4)
		if err != nil {
			return true, err
		}
		return true, u.push(int64(int32(v)))
	case 'K': // BININT1
		v, err := u.uint(1)
		if err != nil {
			return true, err
		}
		return true, u.push(int64(v))
	case 'M': // BININT2
		v, err := u.uint(2)
		if err != nil {
			return true, err
		}
		return true, u.push(int64(v))
	case 0x8a, 0x8b: // LONG1, LONG4: little-endian two's complement
		size := 1
		if op == 0x8b {
			size = 4
		}
		b, err := u.counted(size)
		if err != nil {
			return true, err
		}
		return true, u.push(decodeLong(b))
	case 'G': // BINFLOAT, big-endian
		b, err := u.take(8)
		if err != nil {
			return true, err
		}
		return true, u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'X', 0x8c, 0x8d, 'U', 'T': // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, SHORT_BINSTRING, BINSTRING
		b, err := u.counted(countBytes(op))
		if err != nil {
			return true, err
		}
		return true, u.push(string(b))
	case 'B', 'C', 0x8e: // BINBYTES, SHORT_BINBYTES, BINBYTES8
		b, err := u.counted(countBytes(op))
		if err != nil {
			return true, err
		}
		return true, u.push(append([]byte(nil), b...))
	}
	return false, nil
}

// stepStack runs the opcodes that manage the stack, its marks and the memo.
func (u *unpickler) stepStack(op byte) (bool, error) {
	switch op {
	case '(': // MARK
		if len(u.marks) >= maxStack {
			return true, u.fail("too many MARKs")
		}
		u.marks = append(u.marks, len(u.stack))
		return true, nil
	case 'q', 'r', 0x94: // BINPUT, LONG_BINPUT, MEMOIZE
		var idx uint64
		var err error
		switch op {
		case 'q':
			idx, err = u.uint(1)
		case 'r':
			idx, err = u.uint(4)
		default:
			idx = uint64(len(u.memo))
		}
		if err != nil {
			return true, err
		}
		v, err := u.top()
		if err != nil {
			return true, err
		}
		if len(u.memo) >= maxMemo {
			return true, u.fail("memo larger than %d", maxMemo)
		}
		u.memo[uint32(idx)] = v
		return true, nil
	case 'h', 'j': // BINGET, LONG_BINGET
		size := 1
		if op == 'j' {
			size = 4
		}
		idx, err := u.uint(size)
		if err != nil {
			return true, err
		}
		v, ok := u.memo[uint32(idx)]
		if !ok {
			return true, u.fail("memo key %d not set", idx)
		}
		return true, u.push(v)
	case '0': // POP
		if len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1] {
			_, err := u.popMark() // POP of a bare MARK drops the mark, as CPython does
			return true, err
		}
		_, err := u.pop()
		return true, err
	case '1': // POP_MARK
		_, err := u.popMark()
		return true, err
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return true, err
		}
		return true, u.push(v)
	}
	return false, nil
}

// stepContainer runs the opcodes that build tuples, lists and dicts.
func (u *unpickler) stepContainer(op byte) (bool, error) {
	switch op {
	case '}':
		return true, u.push(&Dict{})
	case ']':
		return true, u.push(&List{})
	case ')':
		return true, u.push(Tuple{})
	case 0x8f: // EMPTY_SET: kept as a list
		return true, u.push(&List{})
	case 't': // TUPLE
		items, err := u.popMark()
		if err != nil {
			return true, err
		}
		return true, u.push(Tuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op - 0x84)
		items := make(Tuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return true, err
			}
			items[i] = v
		}
		return true, u.push(items)
	case 'l': // LIST
		items, err := u.popMark()
		if err != nil {
			return true, err
		}
		return true, u.push(&List{Items: items})
	case 'd': // DICT
		items, err := u.popMark()
		if err != nil {
			return true, err
		}
		d := &Dict{}
		return true, u.setItems(d, items, u.push(d))
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return true, err
		}
		return true, u.appendTo([]any{v})
	case 'e', 0x90: // APPENDS, ADDITEMS
		items, err := u.popMark()
		if err != nil {
			return true, err
		}
		return true, u.appendTo(items)
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return true, err
		}
		k, err := u.pop()
		if err != nil {
			return true, err
		}
		d, err := u.topDict()
		if err != nil {
			return true, err
		}
		d.set(k, v)
		return true, nil
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return true, err
		}
		d, err := u.topDict()
		if err != nil {
			return true, err
		}
		return true, u.setItems(d, items, nil)
	}
	return false, nil
}

// stepObject runs the opcodes that name and call globals: only the allow-listed ones
// get this far, and call interprets them without running anything.
func (u *unpickler) stepObject(op byte) (bool, error) {
	switch op {
	case 'c': // GLOBAL "module\nname\n"
		mod, err := u.line()
		if err != nil {
			return true, err
		}
		name, err := u.line()
		if err != nil {
			return true, err
		}
		return true, u.global(Global{mod, name})
	case 0x93: // STACK_GLOBAL
		name, err := u.pop()
		if err != nil {
			return true, err
		}
		mod, err := u.pop()
		if err != nil {
			return true, err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return true, u.fail("STACK_GLOBAL of non-strings")
		}
		return true, u.global(Global{ms, ns})
	case 'R', 0x81: // REDUCE, NEWOBJ: callable(*args)
		args, err := u.pop()
		if err != nil {
			return true, err
		}
		fn, err := u.pop()
		if err != nil {
			return true, err
		}
		t, ok := args.(Tuple)
		if !ok {
			return true, u.fail("call arguments are %T, not a tuple", args)
		}
		v, err := u.call(fn, t)
		if err != nil {
			return true, err
		}
		return true, u.push(v)
	case 'b': // BUILD: obj.__setstate__(state), interpreted
		state, err := u.pop()
		if err != nil {
			return true, err
		}
		obj, err := u.top()
		if err != nil {
			return true, err
		}
		return true, u.build(obj, state)
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return true, err
		}
		if u.persist == nil {
			return true, u.forbid("persistent id without an archive")
		}
		v, err := u.persist(pid)
		if err != nil {
			return true, &weights.FormatError{Format: "torch", File: u.name, Offset: int64(u.opAt), Msg: "pickle: " + err.Error()}
		}
		return true, u.push(v)
	}
	return false, nil
}

func opName(op byte) string {
	names := map[byte]string{'i': "INST", 'o': "OBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 'P': "PERSID",
		'I': "INT", 'L': "LONG", 'S': "STRING", 'V': "UNICODE", 'F': "FLOAT", 'p': "PUT", 'g': "GET",
		0x92: "NEWOBJ_EX", 0x91: "FROZENSET", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER"}
	if n, ok := names[op]; ok {
		return n
	}
	return "unknown"
}

func (u *unpickler) global(g Global) error {
	if !allowedGlobal(g) {
		return u.forbid("global %q is not allowed (only tensor-rebuilding globals are)", g.String())
	}
	return u.push(g)
}

func (u *unpickler) topDict() (*Dict, error) {
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	d, ok := v.(*Dict)
	if !ok {
		return nil, u.fail("SETITEM on %T, not a dict", v)
	}
	return d, nil
}

func (u *unpickler) setItems(d *Dict, items []any, err error) error {
	if err != nil {
		return err
	}
	if len(items)%2 != 0 {
		return u.fail("odd number of dict items")
	}
	for i := 0; i < len(items); i += 2 {
		d.set(items[i], items[i+1])
	}
	return nil
}

func (u *unpickler) appendTo(items []any) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	l, ok := v.(*List)
	if !ok {
		return u.fail("APPEND to %T, not a list", v)
	}
	l.Items = append(l.Items, items...)
	return nil
}

func decodeLong(b []byte) any {
	if len(b) <= 8 {
		var v int64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | int64(b[i])
		}
		if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
			v -= int64(1) << (8 * len(b))
		}
		return v
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	n := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return n
}
