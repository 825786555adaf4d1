package gpu

// AddDeviceRuntime lets an external test file put a device backend's Runtime into the
// shared op table (see deviceRuntimes).
func AddDeviceRuntime(name string, open func() (*Runtime, string)) { deviceRuntimes[name] = open }
