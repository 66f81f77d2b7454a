"""Op types inside saved / traced functions (what an exported graph needs)."""


def saved_op_types(function):
    """Op types in every concrete function of a loaded `tf.function`, nested
    functions (loop and branch bodies) included."""
    ops = set()
    for concrete in function.concrete_functions:
        graph = concrete.graph.as_graph_def()
        ops |= {node.op for node in graph.node}
        ops |= {node.op for lib in graph.library.function for node in lib.node_def}
    return ops
