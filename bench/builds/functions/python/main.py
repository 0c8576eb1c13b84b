"""Build benchmark function: uses each of its pip dependencies once."""
import attr
import idna
import requests
import six
from dateutil import parser

# The benchmark driver rewrites this line between the cold and the warm
# build, and checks that the warm package serves the new value.
BUILD_MARK = "original"


@attr.s
class Point:
    x = attr.ib()


def main(context):
    return context.res.json({
        "requests": requests.__version__,
        "idna": idna.encode("bücher.example").decode(),
        "six": six.PY3,
        "year": parser.parse("2024-02-03").year,
        "attrs": Point(1).x,
        "mark": BUILD_MARK,
    })
