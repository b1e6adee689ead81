"""The benchmarks: each starts what it measures (a random model, a daemon, a broker) and prints
figures beside their baselines and targets. None of this is imported by the product code.

    bulletd.bench.runtime   `bullet bench`: decode/prefill speed, memory, structured output
    bulletd.bench.format    `bullet bench-format`: open / verify / RSS / BQ4 error figures
    bulletd.bench.kernels   `python -m bulletd.bench.kernels`: native forward per kernel path
    bulletd.bench.roofline  `python -m bulletd.bench.roofline`: where a token's time goes, beside the
                            roofline of the model on this machine (also in `bullet bench`)
    bulletd.bench.against   `python -m bulletd.bench.against REV`: this checkout's kernels beside another
                            git revision's (built in a temporary directory), decode in alternating processes
    bulletd.bench.daemon    `bulletd-cli bench`: requests through bulletd over MQTT and the socket
    bulletd.bench.agents    `python -m bulletd.bench.agents`: an agent request over MQTT vs in-process
    bulletd.bench.flood     `python -m bulletd.bench.flood`: a burst of MQTT requests and the RSS after
    bulletd.bench.ota       `python -m bulletd.bench.ota`: OTA push figures over loopback
"""
