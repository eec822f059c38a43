package chunkstore

import (
	"os"
	"syscall"
)

// stampOf reads what identifies one version of a file's contents: any write
// moves the change time, which no user tool can set back.
func stampOf(fi os.FileInfo) stamp {
	st := stamp{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.Ctime = sys.Ctim.Nano()
		st.Ino = sys.Ino
		st.Dev = uint64(sys.Dev)
	}
	return st
}
