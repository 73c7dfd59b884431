//go:build !linux

package main

import "syscall"

// childAttr: elsewhere the demo stops its instances itself.
func childAttr() *syscall.SysProcAttr { return nil }
