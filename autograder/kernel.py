"""The Jupyter kernel nbgrader grades with: ipykernel under the command's memory, CPU and file limits.

nbgrader runs every student in a kernel on the instructor's machine with no memory limit; a memory bomb
would take the machine down. This wrapper sets the limits of ``autograder.sandbox.Limits`` before the
kernel starts. It does not hide files or the network: that is what ``python -m autograder`` adds.
"""
import resource

from ipykernel import kernelapp

from .sandbox import Limits

if __name__ == "__main__":
    limits = Limits()
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    kernelapp.launch_new_instance()
