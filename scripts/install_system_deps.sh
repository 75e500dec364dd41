#!/usr/bin/env bash
# Installs what the example dataset needs: FluidSynth, a General MIDI SoundFont and espeak-ng.
# Uses apt-get when it is available (as root, or with passwordless sudo); otherwise explains what is
# missing and carries on: the dataset builder then falls back to its built-in synthesiser.
set -u
missing=()
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
compgen -G "/usr/share/sounds/sf2/*.sf2" >/dev/null || compgen -G "/usr/share/soundfonts/*.sf2" >/dev/null \
  || missing+=(timgm6mb-soundfont)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${missing[*]} not found and apt-get is not available: install them with your package manager" \
       "for the real example data; the example builder will use its built-in synthesiser for music and skip speech."
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "note: ${missing[*]} not found and installing them needs root: run" \
       "'sudo apt-get install fluidsynth timgm6mb-soundfont espeak-ng'; meanwhile the example builder" \
       "uses its built-in synthesiser for music and skips speech."
  exit 0
fi
echo "Installing ${missing[*]} with apt-get..."
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
       "${missing[@]}" >/dev/null; }; then
  echo "note: apt-get could not install ${missing[*]}; the example builder will fall back to its built-in synthesiser."
fi
exit 0
