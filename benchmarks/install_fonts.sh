#!/bin/sh
# Install the CJK fonts the glyph benchmark renders (keras_facemargin.data.glyphs).
# Debian/Ubuntu only; needs root (or sudo). Prints what to do where it cannot install.
set -u
PACKAGES="fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei fonts-wqy-microhei fonts-ipafont-gothic fonts-ipafont-mincho"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_fonts: no apt-get here. Install CJK TrueType/OpenType fonts with your system's"
    echo "package manager (Noto Sans/Serif CJK, AR PL UKai/UMing, WenQuanYi, IPA), or pass"
    echo "font files to the generator with --fonts PATH..."
    exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo"
    else
        echo "install_fonts: needs root to run apt-get. Run as root: apt-get update && apt-get install -y $PACKAGES"
        exit 1
    fi
fi
$SUDO apt-get update -qq || { echo "install_fonts: apt-get update failed (no network to the Debian mirror?)"; exit 1; }
# one package at a time, so that one missing package does not stop the others
missing=""
for p in $PACKAGES; do
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install_fonts: could not install:$missing (the generator uses the fonts that are installed)"
fi
echo "install_fonts: CJK font files now installed:"
find /usr/share/fonts -type f \( -iname '*.ttf' -o -iname '*.ttc' -o -iname '*.otf' \) \
    | grep -iE 'cjk|ukai|uming|wqy|ipa' | sort
