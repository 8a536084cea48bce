//! One macro that turns a table of wire codes into an enum that keeps unknown values.
//!
//! Opcodes and status codes are each written once, as a table. A value the table does not
//! name is kept as `Unknown(n)` and printed in hex, so nothing a device sends is lost.

macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value not in the table, kept as received.
            Unknown($repr),
        }

        impl $name {
            /// Every named value, in table order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire value.
            pub fn to_u8(self) -> $repr {
                match self {
                    $( $name::$variant => $value, )*
                    $name::Unknown(v) => v,
                }
            }

            /// The value for a wire byte; never fails.
            pub fn from_u8(v: $repr) -> $name {
                match v {
                    $( $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }

            /// The name Yubico's interface header gives the value.
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $( $name::$variant => std::borrow::Cow::Borrowed($text), )*
                    $name::Unknown(v) => std::borrow::Cow::Owned(format!("0x{:02x}", v)),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.name())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.name())
            }
        }
    };
}

pub(crate) use wire_enum;
