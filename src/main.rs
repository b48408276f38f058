fn main() {
    println!("ringwait");
}
