package testenv

import "syscall"

// sysProcAttr puts a child in its own process group (so Stop reaches its children too)
// and has the kernel kill it should the test binary die without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
