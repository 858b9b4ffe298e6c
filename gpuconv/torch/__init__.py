from ._activation import *
from ._conv import *
from ._linear import *
from ._loss import *
from ._norm import *
from ._pool import *
from ._rnn import *
