package pipeline

import "os"

func hostname() string { h, _ := os.Hostname(); return h }

func pid() int { return os.Getpid() }
