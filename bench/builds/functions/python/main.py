"""Build benchmark function: uses each of its pip dependencies once."""
import attr
import idna
import requests
import six
from dateutil import parser


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
    })
