from . import CALLS


class Job:
    def __init__(self, glue_context):
        self.glue_context = glue_context

    def init(self, name, args):
        CALLS.append(("job.init", name))

    def commit(self):
        CALLS.append(("job.commit",))
