#!/bin/sh
echo "coverage tools are not available in dcp's offline build" >&2
exit 1
