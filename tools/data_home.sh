# Sourced by tools/setup.sh and tools/kb/geo_pretrain.sh: the data home and its gazetteer folder, resolved as
# src/home.rs does (CONTRASTGEO_HOME, else the platform data directory; CONTRASTGEO_GAZETTEER moves the
# gazetteer folder alone). Sets HOME_DIR and GAZ_DIR.
if [ -n "${CONTRASTGEO_HOME:-}" ]; then
  HOME_DIR=$CONTRASTGEO_HOME
elif [ "$(uname -s)" = Darwin ]; then
  HOME_DIR="$HOME/Library/Application Support/contrastgeo"
else
  HOME_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/contrastgeo"
fi
GAZ_DIR="${CONTRASTGEO_GAZETTEER:-$HOME_DIR/gazetteer}"
