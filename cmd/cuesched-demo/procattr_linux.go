package main

import "syscall"

// childAttr makes an instance die with the demo: the kernel sends it
// SIGKILL if the demo itself dies without stopping it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
