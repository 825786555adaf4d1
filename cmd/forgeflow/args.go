package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Command lines are read the way ComfyUI's argparse reads them (comfy/cli_args.py), on
// top of a flag.FlagSet that holds the flags, their defaults and their help:
//
//   - flags and paths mix in any order ("run wf.json --base-directory X"); "--" ends
//     the flags;
//   - a flag's value follows it after a space or an "=" ("--port 8188", "--port=8188");
//     both "-flag" and "--flag" work;
//   - a flag with an optional value (argparse nargs="?": --listen, --enable-cors-header,
//     --verbose) takes the next word when that word is not a flag (and, for a flag with
//     a fixed set of values, is one of them); alone it takes its bare value;
//   - a flag that takes several values (argparse nargs="+": --extra-model-paths-config)
//     takes every following word up to the next flag in a command without paths
//     (serve), and one value per use in a command with paths, so that the paths are
//     never eaten;
//   - an unknown flag is a usage error naming it, unless a file of that name exists
//     (then it is a path).
//
// parseFlags is the one entry point every subcommand uses; afterwards fs.Args() holds
// the paths in their order.

// optionalValue is implemented by flag values that take an optional value.
type optionalValue interface {
	flag.Value
	// takes reports whether the word after the flag is its value.
	takes(next string) bool
}

// multiValue is implemented by flag values that take several values after one flag.
type multiValue interface {
	flag.Value
	multi()
}

// listFlag is a flag that may be repeated, each use adding values (argparse's
// nargs="+", action="append").
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
func (l *listFlag) multi()             {}

// optFlag is a flag with an optional value (argparse's nargs="?" with const): given
// alone it takes bare, given with a value (after "=" or a space) it takes that value.
// choices, when set, are the only values it takes (compared without case); a word
// after the flag that is not one of them is left for the next argument.
type optFlag struct {
	val, bare string
	set       bool
	choices   []string
}

func (o *optFlag) String() string { return o.val }
func (o *optFlag) Set(v string) error {
	o.set = true
	if v == "true" {
		v = o.bare
	}
	if o.choices != nil && v != o.bare {
		found := false
		for _, c := range o.choices {
			if strings.EqualFold(c, v) {
				v, found = c, true
				break
			}
		}
		if !found {
			return fmt.Errorf("%q is not one of %s", v, strings.Join(o.choices, ", "))
		}
	}
	o.val = v
	return nil
}
func (o *optFlag) IsBoolFlag() bool { return true }
func (o *optFlag) takes(next string) bool {
	if o.choices == nil {
		return true
	}
	for _, c := range o.choices {
		if strings.EqualFold(c, next) {
			return true
		}
	}
	return false
}

// errUnknownFlag is a flag the command does not have.
var errUnknownFlag = errors.New("unknown flag")

// parseFlags parses a subcommand's command line, reporting a usage error as exit code
// 2 (and -h as 0, after the flag list). The paths are left in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	return parseCommandLine(fs, args, true)
}

// parseFlagsOnly is parseFlags for a command that takes no paths (serve): a
// several-valued flag takes every following word up to the next flag, and a word
// that is not a flag's value is a usage error.
func parseFlagsOnly(fs *flag.FlagSet, args []string) (int, bool) {
	code, ok := parseCommandLine(fs, args, false)
	if ok && fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "forgeflow %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return exitUsage, false
	}
	return code, ok
}

func parseCommandLine(fs *flag.FlagSet, args []string, paths bool) (int, bool) {
	flags, rest, err := splitArgs(fs, args, paths)
	if err != nil {
		fmt.Fprintf(fs.Output(), "forgeflow %s: %v\nRun \"forgeflow %s -h\" for the flags.\n", fs.Name(), err, fs.Name())
		return exitUsage, false
	}
	if err := fs.Parse(append(append(flags, "--"), rest...)); err != nil {
		if err == flag.ErrHelp {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// splitArgs sorts args into flag words for fs.Parse, each flag with its value joined
// by "=", and the paths.
func splitArgs(fs *flag.FlagSet, args []string, paths bool) (flags, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(rest, args[i+1:]...), nil
		}
		if !isFlagWord(a) {
			rest = append(rest, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				flags = append(flags, a)
				continue
			}
			if _, statErr := os.Stat(a); statErr == nil && paths {
				rest = append(rest, a) // a file whose name starts with "-"
				continue
			}
			return nil, nil, fmt.Errorf("%w --%s", errUnknownFlag, name)
		}
		if hasValue {
			flags = append(flags, a)
			continue
		}
		next, hasNext := "", i+1 < len(args)
		if hasNext {
			next = args[i+1]
		}
		switch v := f.Value.(type) {
		case optionalValue:
			// An optional value that may repeat (argparse nargs="*") takes every
			// following word it accepts.
			_, many := f.Value.(multiValue)
			n := 0
			for i+1 < len(args) && (n == 0 || many) && !isFlagWord(args[i+1]) && args[i+1] != "--" && v.takes(args[i+1]) {
				flags = append(flags, "--"+name+"="+args[i+1])
				i++
				n++
			}
			if n == 0 {
				flags = append(flags, "--"+name)
			}
			continue
		case multiValue:
			if !paths {
				n := 0
				for i+1 < len(args) && !isFlagWord(args[i+1]) && args[i+1] != "--" {
					flags = append(flags, "--"+name+"="+args[i+1])
					i++
					n++
				}
				if n == 0 {
					return nil, nil, fmt.Errorf("flag --%s needs at least one value", name)
				}
				continue
			}
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			flags = append(flags, "--"+name)
			continue
		}
		if !hasNext {
			return nil, nil, fmt.Errorf("flag --%s needs a value", name)
		}
		flags = append(flags, "--"+name+"="+next)
		i++
	}
	return flags, rest, nil
}

// isFlagWord reports whether a command-line word is a flag: it starts with "-", is not
// "-" alone (standard input, by convention) and is not a negative number.
func isFlagWord(a string) bool {
	if len(a) < 2 || a[0] != '-' || a == "--" {
		return false
	}
	_, err := strconv.ParseFloat(a, 64)
	return err != nil
}
