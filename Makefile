# The two commands of the README, and the pieces they are made of.
#   make run   - install what is missing, build, bring up a demo deployment on loopback
#   make test  - install what is missing, build (plain and ASan+UBSan), run every suite
.PHONY: all deps build build-asan run test unit e2e format format-check bench clean

BUILD ?= build
BUILD_ASAN ?= build-asan
CMAKE_FLAGS ?=

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

$(BUILD_ASAN)/build.ninja:
	cmake -S . -B $(BUILD_ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=ON $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD)

build-asan: deps $(BUILD_ASAN)/build.ninja
	@ninja -C $(BUILD_ASAN)

run: build
	@sh scripts/run-demo.sh

test: build build-asan
	@sh tests/run.sh

unit: build
	@sh tests/run.sh unit

e2e: build
	@sh tests/run.sh e2e

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

bench: build
	@sh scripts/deps.sh bench
	@sh bench/run.sh

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
