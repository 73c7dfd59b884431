// Package archtest holds the architecture tests: the rules about which
// package may import which, checked with `go list` over the module.
package archtest
