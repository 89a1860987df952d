package pipeline

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// copyStream builds a binary COPY stream of rows (nil: NULL), with a
// header extension of ext bytes, as the server would send it.
func copyStream(rows [][][]byte, ext int) []byte {
	var b bytes.Buffer
	b.Write(copySignature)
	binary.Write(&b, binary.BigEndian, int32(0))   //nolint:errcheck // bytes.Buffer
	binary.Write(&b, binary.BigEndian, int32(ext)) //nolint:errcheck
	b.Write(make([]byte, ext))
	for _, r := range rows {
		binary.Write(&b, binary.BigEndian, int16(len(r))) //nolint:errcheck
		for _, f := range r {
			if f == nil {
				binary.Write(&b, binary.BigEndian, int32(-1)) //nolint:errcheck
				continue
			}
			binary.Write(&b, binary.BigEndian, int32(len(f))) //nolint:errcheck
			b.Write(f)
		}
	}
	binary.Write(&b, binary.BigEndian, int16(-1)) //nolint:errcheck
	return b.Bytes()
}

// collect feeds stream to a copyRows in pieces cut at cuts and returns
// the rows it saw, each field copied (nil kept apart from empty).
func collect(stream []byte, cuts []int) ([][][]byte, *copyRows, error) {
	var got [][][]byte
	c := &copyRows{row: func(f [][]byte) error {
		row := make([][]byte, len(f))
		for i, v := range f {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		got = append(got, row)
		return nil
	}}
	prev := 0
	for _, cut := range append(cuts, len(stream)) {
		// Each piece in a buffer of its own that is scribbled over after
		// Write, as pgconn reuses its read buffer.
		piece := append([]byte(nil), stream[prev:cut]...)
		if _, err := c.Write(piece); err != nil {
			return got, c, err
		}
		for i := range piece {
			piece[i] = 0xAA
		}
		prev = cut
	}
	return got, c, nil
}

// TestCopyRowsAnySplit: the stream parses to the same rows however the
// transport cuts it: in one piece, in two at every offset, byte by byte.
func TestCopyRowsAnySplit(t *testing.T) {
	rows := [][][]byte{
		{[]byte("a"), nil, []byte{}, []byte(strings.Repeat("x", 300))},
		{},
		{nil},
		{[]byte("zoë 部門\t\n\\"), []byte{0, 1, 2}},
	}
	for _, ext := range []int{0, 5} {
		stream := copyStream(rows, ext)
		splits := [][]int{nil}
		for i := 1; i < len(stream); i++ {
			splits = append(splits, []int{i})
		}
		every := []int{}
		for i := 1; i < len(stream); i++ {
			every = append(every, i)
		}
		splits = append(splits, every)
		for _, cuts := range splits {
			got, c, err := collect(stream, cuts)
			if err != nil {
				t.Fatalf("ext %d cuts %v: %v", ext, cuts, err)
			}
			if !reflect.DeepEqual(got, rows) || !c.done || len(c.carry) != 0 || c.n != len(rows) {
				t.Fatalf("ext %d cuts %v: got %q (done %v, carry %d, n %d), want %q", ext, cuts, got, c.done, len(c.carry), c.n, rows)
			}
			for i := range rows {
				for j := range rows[i] {
					if (got[i][j] == nil) != (rows[i][j] == nil) {
						t.Fatalf("ext %d cuts %v: row %d field %d: NULL and empty confused", ext, cuts, i, j)
					}
				}
			}
		}
	}
}

// TestCopyRowsRefusesDamage: a stream that is not binary COPY, or breaks
// its own framing, is an error, never a panic or a shifted field; a
// stream cut short is not mistaken for a complete one.
func TestCopyRowsRefusesDamage(t *testing.T) {
	good := copyStream([][][]byte{{[]byte("abc"), nil}}, 0)
	negLen := copyStream([][][]byte{{[]byte("abc")}}, 0)
	binary.BigEndian.PutUint32(negLen[19+2:], uint32(0xFFFFFFF0)) // the field's length: -16
	negFields := copyStream([][][]byte{{[]byte("abc")}}, 0)
	binary.BigEndian.PutUint16(negFields[19:], uint16(0xFFFE)) // the row's field count: -2
	for _, c := range []struct {
		name   string
		stream []byte
		err    string // "" : no error, but the stream must not count as complete
	}{
		{"text COPY", []byte("1\tabc\n2\tdef\n\\.\n....."), "not a binary COPY stream"},
		{"negative length", negLen, "has length -16"},
		{"negative field count", negFields, "has -2 fields"},
		{"data after the end", append(append([]byte{}, good...), 0, 1), "data after the end"},
		{"cut in a field", good[:len(good)-6], ""},
		{"cut before the trailer", good[:len(good)-2], ""},
		{"header only", good[:19], ""},
	} {
		got, r, err := collect(c.stream, nil)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: err %v, want %q (rows %q)", c.name, err, c.err, got)
		case c.err == "" && (err != nil || r.done):
			t.Errorf("%s: err %v, done %v: a cut stream must parse without error and not be complete", c.name, err, r.done)
		}
	}
}

// TestCopyRowsStopsOnRowError: an error from row stops the parse and is
// the one reported.
func TestCopyRowsStopsOnRowError(t *testing.T) {
	stream := copyStream([][][]byte{{[]byte("1")}, {[]byte("2")}, {[]byte("3")}}, 0)
	seen := 0
	c := &copyRows{row: func(f [][]byte) error {
		seen++
		if string(f[0]) == "2" {
			return fmt.Errorf("row two refused")
		}
		return nil
	}}
	if _, err := c.Write(stream); err == nil || err.Error() != "row two refused" || seen != 2 || c.err == nil {
		t.Errorf("err %v after %d rows (c.err %v), want row two's error after 2", err, seen, c.err)
	}
}

// TestCopyConfigKeepsTLS: without an sslmode in the URL lib/pq requires
// TLS; the COPY connection must not fall back to plain text where the
// queries' connections would refuse to.
func TestCopyConfigKeepsTLS(t *testing.T) {
	for _, c := range []struct {
		url       string
		plainOK   bool
		wantFirst bool // the first attempt uses TLS
	}{
		{"postgres://u@db.example/x", false, true},
		{"postgres://u@db.example/x?sslmode=require", false, true},
		{"postgres://u@db.example/x?sslmode=prefer", true, true},
		{"postgres://u@db.example/x?sslmode=disable", true, false},
		{"host=db.example user=u dbname=x sslmode=disable", true, false},
	} {
		t.Setenv("PGSSLMODE", "") // restored after the test
		os.Unsetenv("PGSSLMODE")
		cfg, err := copyConfig(c.url)
		if err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		plain := cfg.TLSConfig == nil
		for _, f := range cfg.Fallbacks {
			plain = plain || f.TLSConfig == nil
		}
		if plain != c.plainOK || (cfg.TLSConfig != nil) != c.wantFirst {
			t.Errorf("%s: a plain-text attempt %v (want %v), TLS first %v (want %v)", c.url, plain, c.plainOK, cfg.TLSConfig != nil, c.wantFirst)
		}
	}
}

// TestCopyConfigLibpqOptions: options only lib/pq knows never reach the
// server as settings (it refuses unknown ones): the harmless ones are
// dropped or applied, the ones that change where or how securely it
// connects are refused by name, before anything runs.
func TestCopyConfigLibpqOptions(t *testing.T) {
	cfg, err := copyConfig("postgres://u@db.example/x?sslmode=disable&binary_parameters=yes&disable_prepared_binary_result=yes&fallback_application_name=roster&timezone=UTC")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"binary_parameters", "disable_prepared_binary_result", "fallback_application_name"} {
		if _, ok := cfg.RuntimeParams[k]; ok {
			t.Errorf("%s is sent to the server", k)
		}
	}
	if cfg.RuntimeParams["application_name"] != "roster" || cfg.RuntimeParams["timezone"] != "UTC" {
		t.Errorf("settings %v: want application_name from the fallback and timezone kept", cfg.RuntimeParams)
	}
	if cfg, err := copyConfig("postgres://u@db.example/x?sslmode=disable&application_name=mine&fallback_application_name=roster"); err != nil || cfg.RuntimeParams["application_name"] != "mine" {
		t.Errorf("an application_name beside the fallback: %v, %v", cfg, err)
	}
	for _, k := range []string{"hostaddr=10.0.0.1", "load_balance_hosts=random", "sslinline=true", "ssl_min_protocol_version=TLSv1.3", "ssl_max_protocol_version=TLSv1.3"} {
		url := "postgres://u@db.example/x?sslmode=disable&" + k
		if _, err := copyConfig(url); err == nil || !strings.Contains(err.Error(), strings.Split(k, "=")[0]) {
			t.Errorf("%s: %v, want a refusal naming it", k, err)
		}
		if _, err := OpenDB(url); err == nil {
			t.Errorf("OpenDB(%s) accepted", k)
		}
	}
}
