package matchtest

import "github.com/cuesched/cuesched/match"

// GuardCase is one side of one condition of the rules a booking's counters
// are held to: Cuebot's guard triggers on subscription and job_resource, and
// the folder cap cuesched keeps itself (folder_resource has no guard). A proc
// of Size booked against the counters as they stand books or not (Books);
// matching and dispatch's re-check must agree on every case, or a placement
// matching makes is dropped again and again.
type GuardCase struct {
	Name string
	// Rule is the condition as the guard's trigger (or the cap) states it.
	Rule string
	// Sub is the show's subscription on the host's allocation; SubFound
	// false means there is no subscription row.
	Sub      match.Subscription
	SubFound bool
	Job      match.Cap // job_resource
	Folder   match.Cap // folder_resource
	Size     match.Resources
	Books    bool
	// Refused names the cap that refuses when Books is false: "subscription",
	// "job" or "folder".
	Refused string
}

const (
	ruleBurst  = "subscription: verify_subscription WHEN int_burst unchanged AND int_cores grows: refuse int_cores > int_burst"
	ruleNoSub  = "subscription: Cuebot books a show on an allocation only through a subscription row with int_burst > 0"
	ruleJob    = "job: verify_job_resources WHEN (int_max_cores unchanged AND int_cores grows) OR (int_max_gpus unchanged AND int_gpus grows): refuse int_cores > int_max_cores, refuse int_gpus > int_max_gpus"
	ruleFolder = "folder: no guard; cuesched's cap: max < 0 unlimited, else int_cores <= int_max_cores AND int_gpus <= int_max_gpus after the booking"
)

// GuardCases lists every condition of the subscription and job guards and of
// the folder cap with cases on both sides of it. Everything a case does not
// set has room: an 8-core host with 4 GPUs takes the proc.
func GuardCases() []GuardCase {
	cpu := match.Resources{Cores: 100, Mem: 1 << 20}
	gpu := match.Resources{Cores: 100, Mem: 1 << 20, GPUs: 1, GPUMem: 1 << 20}
	base := func(name, rule string, size match.Resources, books bool, refused string, set func(*GuardCase)) GuardCase {
		c := GuardCase{
			Name: name, Rule: rule, Size: size, Books: books, Refused: refused,
			Sub:      match.Subscription{Size: 1000, Burst: 100000},
			SubFound: true,
			Job:      match.Cap{MaxCores: 100000, MaxGPUs: 100},
			Folder:   match.Cap{MaxCores: -1, MaxGPUs: -1},
		}
		set(&c)
		return c
	}
	return []GuardCase{
		base("burst reached exactly", ruleBurst, cpu, true, "", func(c *GuardCase) { c.Sub.Cores, c.Sub.Burst = 900, 1000 }),
		base("burst passed by one unit", ruleBurst, cpu, false, "subscription", func(c *GuardCase) { c.Sub.Cores, c.Sub.Burst = 901, 1000 }),
		base("burst already passed", ruleBurst, cpu, false, "subscription", func(c *GuardCase) { c.Sub.Cores, c.Sub.Burst = 1200, 1000 }),
		base("subscription GPUs are not guarded", ruleBurst, gpu, true, "", func(c *GuardCase) { c.Sub.GPUs = 1000 }),
		base("burst positive", ruleNoSub, cpu, true, "", func(c *GuardCase) { c.Sub.Burst = 100 }),
		base("burst zero", ruleNoSub, cpu, false, "subscription", func(c *GuardCase) { c.Sub.Burst = 0 }),
		base("burst negative", ruleNoSub, cpu, false, "subscription", func(c *GuardCase) { c.Sub.Burst = -1 }),
		base("no subscription row", ruleNoSub, cpu, false, "subscription", func(c *GuardCase) { c.SubFound = false }),

		base("job cores reach the max", ruleJob, cpu, true, "", func(c *GuardCase) { c.Job.Cores, c.Job.MaxCores = 900, 1000 }),
		base("job cores pass the max", ruleJob, cpu, false, "job", func(c *GuardCase) { c.Job.Cores, c.Job.MaxCores = 901, 1000 }),
		base("job max cores zero", ruleJob, cpu, false, "job", func(c *GuardCase) { c.Job.MaxCores = 0 }),
		base("job max cores negative: no unlimited value", ruleJob, cpu, false, "job", func(c *GuardCase) { c.Job.MaxCores = -1 }),
		base("job GPUs reach the max", ruleJob, gpu, true, "", func(c *GuardCase) { c.Job.GPUs, c.Job.MaxGPUs = 1, 2 }),
		base("job GPUs pass the max", ruleJob, gpu, false, "job", func(c *GuardCase) { c.Job.GPUs, c.Job.MaxGPUs = 2, 2 }),
		base("CPU proc, job GPUs at the max", ruleJob, cpu, true, "", func(c *GuardCase) { c.Job.GPUs, c.Job.MaxGPUs = 2, 2 }),
		base("CPU proc, job GPUs above the max", ruleJob, cpu, false, "job", func(c *GuardCase) { c.Job.GPUs, c.Job.MaxGPUs = 3, 2 }),
		base("CPU proc, job max GPUs zero", ruleJob, cpu, true, "", func(c *GuardCase) { c.Job.MaxGPUs = 0 }),
		base("CPU proc, job max GPUs negative", ruleJob, cpu, false, "job", func(c *GuardCase) { c.Job.MaxGPUs = -1 }),

		base("folder unlimited", ruleFolder, gpu, true, "", func(c *GuardCase) { c.Folder = match.Cap{Cores: 1 << 30, GPUs: 1 << 20, MaxCores: -1, MaxGPUs: -1} }),
		base("folder cores reach the max", ruleFolder, cpu, true, "", func(c *GuardCase) { c.Folder.Cores, c.Folder.MaxCores = 900, 1000 }),
		base("folder cores pass the max", ruleFolder, cpu, false, "folder", func(c *GuardCase) { c.Folder.Cores, c.Folder.MaxCores = 901, 1000 }),
		base("folder GPUs reach the max", ruleFolder, gpu, true, "", func(c *GuardCase) { c.Folder.GPUs, c.Folder.MaxGPUs = 1, 2 }),
		base("folder GPUs pass the max", ruleFolder, gpu, false, "folder", func(c *GuardCase) { c.Folder.GPUs, c.Folder.MaxGPUs = 2, 2 }),
		base("CPU proc, folder GPUs at the max", ruleFolder, cpu, true, "", func(c *GuardCase) { c.Folder.GPUs, c.Folder.MaxGPUs = 2, 2 }),
		base("CPU proc, folder GPUs above the max", ruleFolder, cpu, false, "folder", func(c *GuardCase) { c.Folder.GPUs, c.Folder.MaxGPUs = 3, 2 }),
	}
}
