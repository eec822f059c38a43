package client

import "time"

// Report summarises a download. It is also `shoal get --json`'s output.
type Report struct {
	Name      string `json:"name"`
	ContentID string `json:"content_id"`
	Output    string `json:"output"`
	Size      int64  `json:"size"`
	// BytesFetched counts verified chunk bytes fetched in this run,
	// duplicates excluded.
	BytesFetched int64 `json:"bytes_fetched"`
	// BytesResumed counts bytes found already verified in OUT.part.
	BytesResumed int64 `json:"bytes_resumed"`
	// DuplicateBytes counts bytes fetched twice in the endgame or
	// discarded.
	DuplicateBytes int64   `json:"duplicate_bytes"`
	Seconds        float64 `json:"seconds"`
	MBPerSecond    float64 `json:"mb_per_s"`
	Retries        int     `json:"retries"`
	AlreadyDone    bool    `json:"already_done,omitempty"`
	// Files is a folder's file count; FilesReused counts those taken from
	// the folder already at the output instead of fetched (with Force).
	Files       int           `json:"files,omitempty"`
	FilesReused int           `json:"files_reused,omitempty"`
	Peers       []PeerReport  `json:"peers"`
	elapsed     time.Duration // for Seconds
}

// PeerReport is one peer's part in a download.
type PeerReport struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Bytes  int64  `json:"bytes"`
	Chunks int    `json:"chunks"`
	// RoundTripMs is the peer's shortest round trip measured, in
	// milliseconds (a health check); 0 if none was.
	RoundTripMs float64 `json:"round_trip_ms,omitempty"`
	// Window is the flow-control window the peer was given for being far
	// away, in bytes; 0 if it kept the default.
	Window int64 `json:"window,omitempty"`
	// Dropped says why the peer was dropped; empty if it was not.
	Dropped DropReason `json:"dropped,omitempty"`
	// Error is the error that dropped it, for people; tests and scripts
	// read Dropped.
	Error string `json:"error,omitempty"`
}

// Progress is a snapshot of a running download.
type Progress struct {
	Size        int64 // file size, bytes
	Done        int64 // bytes verified and written, resumed ones included
	Resumed     int64 // bytes found verified in OUT.part at the start
	Fetched     int64 // bytes fetched in this run
	ActivePeers int
	Elapsed     time.Duration
}
