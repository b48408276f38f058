//! What a record's outputs are, and how a completion call went.

/// The outputs of one record: zero, one or several values. `One` never allocates.
///
/// ```
/// use ringwait::Outputs;
/// assert_eq!(Outputs::from(vec![1, 2]).len(), 2);
/// assert!(Outputs::<u8>::Empty.is_empty());
/// assert_eq!(Outputs::from(Some(3)), Outputs::One(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Outputs<T> {
    /// No output (a filter, or a miss that should emit nothing).
    #[default]
    Empty,
    /// Exactly one output.
    One(T),
    /// Several outputs, in order.
    Many(Vec<T>),
}

impl<T> Outputs<T> {
    /// Number of outputs.
    pub fn len(&self) -> usize {
        match self {
            Outputs::Empty => 0,
            Outputs::One(_) => 1,
            Outputs::Many(v) => v.len(),
        }
    }

    /// Whether there is no output.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The outputs as a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Outputs::Empty => &[],
            Outputs::One(v) => std::slice::from_ref(v),
            Outputs::Many(v) => v,
        }
    }
}

impl<T> From<Vec<T>> for Outputs<T> {
    fn from(v: Vec<T>) -> Self {
        Outputs::Many(v)
    }
}

impl<T> From<Option<T>> for Outputs<T> {
    fn from(v: Option<T>) -> Self {
        match v {
            Some(v) => Outputs::One(v),
            None => Outputs::Empty,
        }
    }
}

/// What happened to one completion call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[must_use = "a completion may be ignored; check it if it matters"]
pub enum Completion {
    /// The first completion of the current attempt: it counts.
    Accepted,
    /// The attempt was already completed; ignored and counted.
    Duplicate,
    /// The record timed out, was retried, or its slot was reused; ignored and counted.
    Late,
}
