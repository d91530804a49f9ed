# Shortcuts for the scripts; each works on a fresh machine of the supported kind, as root.
.PHONY: demo test bench bench-quick bench-compare soak

demo:  ## the bridge end to end on the built-in simulator and the file sink
	bash scripts/demo.sh

test:  ## every check and test, real Kafka and Redis included (what CI runs)
	bash scripts/test.sh

bench:  ## the benchmark: bench/results/<date>.json, plots and the table
	bash scripts/bench.sh

bench-quick:  ## the same with short windows and 200 instances (a smoke run)
	bash scripts/bench.sh --quick

bench-compare:  ## another commit and this checkout measured back to back: make bench-compare BASE=<commit>
	bash scripts/bench-compare.sh $(BASE)

soak:  ## the chaos soak: SEED=… replays a schedule, DURATION=20m by default, SOAK_OUT=DIR
	SEED="$(SEED)" DURATION="$(or $(DURATION),20m)" SOAK_OUT="$(SOAK_OUT)" bash scripts/soak.sh
