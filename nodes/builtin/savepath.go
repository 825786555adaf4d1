package builtin

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/forgeflow/forgeflow/graph"
)

// File naming of ComfyUI's savers.
//
// A filename_prefix goes through two rounds of substitution in ComfyUI. The front end
// (ComfyUI_frontend utils/searchAndReplace.ts applyTextReplacements, run when a prompt
// is queued) replaces %date:FORMAT% with the local time and %Title.widget% with a widget
// value of the node whose class ("Node name for S&R") or title is Title. The server
// (folder_paths.get_save_image_path, compute_vars) then replaces %width%, %height%,
// %year%, %month%, %day%, %hour%, %minute%, %second%. forgeflow runs both on the server,
// so API clients that skip the front end get the same names; a prefix the front end has
// already expanded holds no more tokens and passes through unchanged.

// frontendReplacements applies the front end's %date:…% and %Title.widget% tokens, using
// the API prompt for node classes (first), titles (_meta.title) and literal widget values.
// Unknown tokens stay as they are, as in the front end.
func frontendReplacements(prefix string, prompt graph.Prompt, now time.Time) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(prefix, '%')
		if i < 0 {
			break
		}
		j := strings.IndexByte(prefix[i+1:], '%')
		if j <= 0 { // no closing %, or "%%" (the pattern needs at least one character)
			if j == 0 {
				b.WriteString(prefix[:i+1])
				prefix = prefix[i+1:]
				continue
			}
			break
		}
		text := prefix[i+1 : i+1+j]
		b.WriteString(prefix[:i])
		b.WriteString(replaceToken(text, prompt, now))
		prefix = prefix[i+j+2:]
	}
	b.WriteString(prefix)
	return b.String()
}

func replaceToken(text string, prompt graph.Prompt, now time.Time) string {
	match := "%" + text + "%"
	parts := strings.Split(text, ".")
	if len(parts) != 2 {
		if strings.HasPrefix(parts[0], "date:") {
			return formatDate(parts[0][len("date:"):], now)
		}
		return match
	}
	id, ok := findPromptNode(prompt, parts[0])
	if !ok {
		return match
	}
	v, ok := prompt[id].Inputs[parts[1]]
	if !ok {
		return match
	}
	if _, isLink := graph.AsLink(v); isLink {
		return match // a linked input has no widget value
	}
	return sanitizeWidgetValue(jsString(v))
}

// findPromptNode returns the first node (in id order) whose class_type equals name, or
// failing that whose title does; the front end matches its "Node name for S&R" property
// (the class by default) before the title.
func findPromptNode(prompt graph.Prompt, name string) (string, bool) {
	ids := make([]string, 0, len(prompt))
	for id := range prompt {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return idLess(ids[a], ids[b]) })
	for _, id := range ids {
		if n := prompt[id]; n != nil && n.ClassType == name {
			return id, true
		}
	}
	for _, id := range ids {
		if n := prompt[id]; n != nil && n.Meta != nil && n.Meta.Title == name {
			return id, true
		}
	}
	return "", false
}

// idLess orders node ids numerically where both are numbers ("2" < "10"), else as text.
func idLess(a, b string) bool {
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	return a < b
}

// jsString renders a widget value as JavaScript's String(value) would. An integer
// literal of the prompt (json.Number) keeps its digits: the front end would have rounded
// one above 2^53 to a double, which only corrupts a seed.
func jsString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return jsNumber(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	case fmt.Stringer: // json.Number
		s := x.String()
		if isIntLiteral(s) {
			return s
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return jsNumber(f)
		}
		return s
	}
	return fmt.Sprint(v)
}

// isIntLiteral reports whether s is a JSON integer: an optional minus and digits.
func isIntLiteral(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// jsNumber is ECMAScript's Number::toString(x) (ECMA-262 §6.1.6.1.20): the shortest
// round-trip digits, written plainly for decimal exponents -6 < n <= 21 and in
// exponent form ("1e+21", "1.5e-7") outside.
func jsNumber(x float64) string {
	switch {
	case math.IsNaN(x):
		return "NaN"
	case math.IsInf(x, 1):
		return "Infinity"
	case math.IsInf(x, -1):
		return "-Infinity"
	case x == 0:
		return "0"
	}
	sign := ""
	if x < 0 {
		sign, x = "-", -x
	}
	e := strconv.FormatFloat(x, 'e', -1, 64) // d.ddde±XX
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	p, _ := strconv.Atoi(exp)
	k, n := len(digits), p+1
	switch {
	case k <= n && n <= 21:
		return sign + digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return sign + digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return sign + "0." + strings.Repeat("0", -n) + digits
	}
	m := digits[:1]
	if k > 1 {
		m += "." + digits[1:]
	}
	es := "+"
	if n-1 < 0 {
		es = "-"
	}
	return sign + m + "e" + es + strconv.Itoa(abs(n-1))
}

// sanitizeWidgetValue replaces the characters the front end refuses in a file name
// (/ ? < > \ : * | " and control characters) with "_".
func sanitizeWidgetValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`/?<>\:*|"`, r) {
			return '_'
		}
		return r
	}, s)
}

// formatDate is the front end's formatDate: the tokens d, dd, M, MM, h, hh, m, mm, s, ss
// (padded to the token's length), yy and yyyy; other text, "yyy" included, is kept.
func formatDate(format string, t time.Time) string {
	var b strings.Builder
	for i := 0; i < len(format); {
		c := format[i]
		n := 1
		switch c {
		case 'd', 'M', 'h', 'm', 's':
			if i+1 < len(format) && format[i+1] == c {
				n = 2
			}
			var v int
			switch c {
			case 'd':
				v = t.Day()
			case 'M':
				v = int(t.Month())
			case 'h':
				v = t.Hour()
			case 'm':
				v = t.Minute()
			case 's':
				v = t.Second()
			}
			fmt.Fprintf(&b, "%0*d", n, v)
		case 'y':
			for n < 4 && i+n < len(format) && format[i+n] == 'y' {
				n++
			}
			switch n {
			case 2:
				fmt.Fprintf(&b, "%02d", t.Year()%100)
			case 4:
				b.WriteString(strconv.Itoa(t.Year()))
			default: // "y" alone is no token; "yyy" is matched and returned as is
				b.WriteString(format[i : i+n])
			}
		default:
			b.WriteByte(c)
		}
		i += n
	}
	return b.String()
}

// computeVars is folder_paths.get_save_image_path's compute_vars.
func computeVars(s string, width, height int, t time.Time) string {
	pairs := []struct{ k, v string }{
		{"%width%", strconv.Itoa(width)},
		{"%height%", strconv.Itoa(height)},
		{"%year%", strconv.Itoa(t.Year())},
		{"%month%", fmt.Sprintf("%02d", int(t.Month()))},
		{"%day%", fmt.Sprintf("%02d", t.Day())},
		{"%hour%", fmt.Sprintf("%02d", t.Hour())},
		{"%minute%", fmt.Sprintf("%02d", t.Minute())},
		{"%second%", fmt.Sprintf("%02d", t.Second())},
	}
	for _, p := range pairs {
		s = strings.ReplaceAll(s, p.k, p.v)
	}
	return s
}

// savePath is where a saver writes: Subfolder of the root folder (slash-separated, ""
// for the root itself), the file name stem and the first free counter.
type savePath struct {
	Subfolder string
	Filename  string
	Counter   int
}

// errOutsideFolder is returned for a filename_prefix that would leave the folder.
var errOutsideFolder = errors.New("saving outside the output folder is not allowed")

// splitPrefix applies compute_vars and splits the prefix into subfolder and file stem as
// get_save_image_path does (os.path.normpath, dirname, basename), refusing a subfolder
// that is absolute or climbs out of the folder. It also returns the basename length of
// the unnormalised prefix, which ComfyUI uses to parse existing file names.
func splitPrefix(prefix string, width, height int, t time.Time) (sub, name string, prefixLen int, err error) {
	if strings.Contains(prefix, "%") {
		prefix = computeVars(prefix, width, height, t)
	}
	if strings.ContainsRune(prefix, 0) {
		return "", "", 0, fmt.Errorf("filename_prefix %q contains a NUL byte", prefix)
	}
	norm := filepath.Clean(prefix)
	sub, name = filepath.Dir(norm), filepath.Base(norm)
	if sub == "." {
		sub = ""
	}
	if sub != "" && !filepath.IsLocal(sub) {
		return "", "", 0, fmt.Errorf("filename_prefix %q: %w", prefix, errOutsideFolder)
	}
	base := prefix[strings.LastIndexByte(prefix, '/')+1:] // Python's posix basename
	return filepath.ToSlash(sub), name, len([]rune(base)), nil
}

// nextCounter is get_save_image_path's counter: one more than the largest NNNNN among the
// entries named "<name>_NNNNN…" in the folder, 1 when there are none. Like ComfyUI it
// slices names by characters, using the prefix's basename length.
func nextCounter(entries []string, name string, prefixLen int) int {
	best, found := 0, false
	for _, e := range entries {
		r := []rune(e)
		end := min(prefixLen+1, len(r))
		pre := string(r[:end])
		if len(pre) == 0 || pre[len(pre)-1] != '_' || pre[:len(pre)-1] != name {
			continue
		}
		digits := 0
		if end < len(r) {
			field := string(r[end:])
			if k := strings.IndexByte(field, '_'); k >= 0 {
				field = field[:k]
			}
			digits = pyInt(field)
		}
		if !found || digits > best {
			best, found = digits, true
		}
	}
	if !found {
		return 1
	}
	return best + 1
}

// pyInt is Python's int(s) for the decimal strings file names hold: surrounding spaces and
// a sign allowed, anything else (or an overflow) counting as 0, as ComfyUI's except does.
func pyInt(s string) int {
	s = strings.TrimSpace(s)
	v, err := strconv.Atoi(s)
	if err != nil || s == "" || strings.HasPrefix(s, "0x") {
		return 0
	}
	return v
}

// prepareSave resolves prefix inside root: it creates the subfolder and returns the first
// free counter. root confines every access to the folder, symbolic links included.
func prepareSave(root *os.Root, prefix string, width, height int, t time.Time) (savePath, error) {
	sub, name, prefixLen, err := splitPrefix(prefix, width, height, t)
	if err != nil {
		return savePath{}, err
	}
	dir := "."
	if sub != "" {
		dir = filepath.FromSlash(sub)
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return savePath{}, fmt.Errorf("filename_prefix %q: %w", prefix, err)
		}
	}
	entries, err := fs.ReadDir(root.FS(), filepath.ToSlash(dir))
	if err != nil {
		return savePath{}, fmt.Errorf("filename_prefix %q: %w", prefix, err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return savePath{Subfolder: sub, Filename: name, Counter: nextCounter(names, name, prefixLen)}, nil
}
