package observe

// Judged reads how many target evaluations Await has made in this test binary.
func Judged() int64 { return judged.Load() }
