"""Configuration of the kernels that execute the book's chapters (passed by the kernel spec that kdcourse.course.book writes).

A kernel started by papermill or nbval listens on local TCP ports, and ipykernel logs a warning
about it at every start. The connection never leaves this machine, and a reader of the build log
takes the warning for an error, so this one message is filtered out; every other message stays.
"""

import logging


class _LocalTcpNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "running over TCP without encryption" not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_LocalTcpNotice())
