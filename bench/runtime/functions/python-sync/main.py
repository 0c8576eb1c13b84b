# Hello-world function for the runtime benchmark (bench/runtime/run.sh), in
# the sync form of the Open Runtimes Python starter.
def main(context):
    return context.res.text("Hello, World!")
