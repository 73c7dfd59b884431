package main

// isHelpFlag says whether a is a request for help, in any of the forms the
// flag package accepts.
func isHelpFlag(a string) bool {
	switch a {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// wantsHelp says whether a command's arguments ask for its help, before
// anything else is checked: --help wins over a missing or bad argument.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelpFlag(a) {
			return true
		}
	}
	return false
}
