// Package sftpd is roster's embedded multi-tenant SFTP server.
//
// A tenant logs in with its tenant ID as user name, by password or public
// key, and sees a fixed tree:
//
//	/incoming   write: uploads land here, complete files only
//	/processed  read-only
//	/failed     read-only
//	/reports    read-only
//
// On disk the tree is <root>/<tenant>/{incoming,processed,failed,reports}.
// pkg/sftp has no chroot, so confinement is done here: every client path is
// split into components that are validated and Lstat'ed one by one (symbolic
// links are never followed, multiply-linked files are refused), and all file
// operations go through an os.Root opened on the tenant's home, so even a race
// with another process on the host cannot reach outside the home.
//
// Uploads are written to <root>/<tenant>/.partial/ (invisible and unreachable
// for clients) and renamed into incoming/ when the client closes the file, so
// every file another process sees in incoming/ is complete. Interrupted or
// oversized uploads are discarded.
//
// Only the "sftp" subsystem is served: shell, exec (and so legacy scp), port
// forwarding, agent forwarding and other channel types are refused.
package sftpd
