#!/bin/sh
# The Debian packages some tests need, checked before `make test` runs them (.ci/run uses it too):
#   mosquitto           a real MQTT broker, started by tests/test_mqtt.py on a free loopback port
#   portaudio19-dev     PortAudio's headers, to build PyAudio (the [mic] extra; the Makefile adds it
#                       to the venv once they are present) for tests/test_mic.py
#   pulseaudio(-utils)  a null sink whose monitor is a real PortAudio input (tests/test_mic.py)
#   libasound2-plugins  ALSA's pulse plugin, through which PortAudio reaches PulseAudio
# As root with apt-get it installs what is missing. Otherwise, or when apt-get fails, it prints
# which tests will skip and the one command that enables them, and exits 0: the other tests run.
# AVEMO_NO_APT=1 never installs (only says); AVEMO_REQUIRE_TEST_DEPS=1 (CI) exits 1 when something
# is still missing at the end.
need=""
mqtt=""
mic=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { need="$need mosquitto"; mqtt=1; }
[ -f /usr/include/portaudio.h ] || { need="$need portaudio19-dev"; mic=1; }
command -v pulseaudio >/dev/null 2>&1 || { need="$need pulseaudio"; mic=1; }
command -v paplay >/dev/null 2>&1 || { need="$need pulseaudio-utils"; mic=1; }
if ! dpkg-query -W -f='${Status}' libasound2-plugins 2>/dev/null | grep -q "ok installed"; then
    need="$need libasound2-plugins"
    mic=1
fi
need="${need# }"
[ -z "$need" ] && exit 0

if [ -z "${AVEMO_NO_APT:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing the Debian packages the tests use: $need"
    # shellcheck disable=SC2086 # one word per package
    if apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need; then
        exit 0
    fi
    echo "make test: apt-get could not install them"
fi

skip=""
[ -n "$mqtt" ] && skip="tests/test_mqtt.py (every test: no mosquitto broker)"
if [ -n "$mic" ]; then
    [ -n "$skip" ] && skip="$skip; "
    skip="${skip}tests/test_mic.py (every test: no PortAudio/PulseAudio microphone)"
fi
echo "make test: these tests will skip: $skip"
echo "make test: to run them too: sudo apt-get install -y $need && make test"
if [ -n "${AVEMO_REQUIRE_TEST_DEPS:-}" ]; then
    exit 1
fi
exit 0
